"""The ledger's writes on PostgreSQL, a batch at a time: one statement per kind of write.

Inside the batch's transaction (the PostgreSQL writer's), all its settlements are
one statement and then all its holds another, bound as arrays (unnest ... WITH
ORDINALITY keeps each write's position). Each write still gets what `apply` in
`_ledger_postgres.py` would have returned for it, in some serial order of the
batch: its settlements, then its holds.

Settlements run first so that their claims come before any account lock; their
statement also locks, ascending and after its claims, every account the batch's
holds will change, so a transaction takes its account rows in one ascending pass and
two writers cannot deadlock on them. The holds' statement decides on account rows
it has locked (SELECT ... FOR UPDATE), placing each account's longest prefix that
fits; the settlements' claims are still conditional UPDATEs of the holds, one claim
per request id.

Budgeted holds and settlements (a key's or account's spend budget) take the single
write's budget statements after their kind's statement, on account rows it has
locked: budgeted holds come after the batch's other holds, each as if alone, and so
do holds with an Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Table

from teegate.billing import Hold, Placement, Settlement
from teegate.store._ledger_postgres import pg_type, place_hold, settle_budgets
from teegate.store._ledger_rows import (
    DEBIT_COLUMNS,
    HOLD_COLUMNS,
    USAGE_COLUMNS,
    LedgerWrite,
    hold_row,
    names,
    placed,
    unclaimed,
    usage_row,
)
from teegate.store._schema import holds, usage_records


def _pg_arrays(table: Table, columns: tuple[str, ...]) -> str:
    """$1::TYPE[], $2::TYPE[], ...: a batch's rows, bound one array per column."""
    return ", ".join(f"${i}::{pg_type(table, name)}[]" for i, name in enumerate(columns, 1))


def _arrays(rows: Iterable[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as columns: one array parameter per column, for unnest."""
    return [list(column) for column in zip(*rows, strict=True)]


# Parameters: one array per hold column, then the accounts the batch's later statements
# change. Per account, the longest prefix of its holds (in batch order) whose running
# sum fits is placed, decided on the locked rows; the rest are refused here and retried
# alone. `locked` takes the accounts in ascending id order, all of them before the
# rows come out (the one-time filter reads it to the end first).
_PLACE_HOLDS = f"""
WITH wanted AS (
    SELECT w.*, (sum(w.amount_nano) OVER (PARTITION BY w.account_id ORDER BY w.ord))::bigint
                AS upto_nano
      FROM unnest({_pg_arrays(holds, HOLD_COLUMNS)})
           WITH ORDINALITY AS w({names(holds, HOLD_COLUMNS)}, ord)
), locked AS MATERIALIZED (
    SELECT id, balance_nano, held_nano FROM accounts
     WHERE id = ANY(ARRAY(SELECT account_id FROM wanted) || ${len(HOLD_COLUMNS) + 1}::integer[])
     ORDER BY id FOR UPDATE
), judged AS MATERIALIZED (
    SELECT wanted.*, locked.balance_nano, locked.held_nano,
           coalesce(wanted.upto_nano <= locked.balance_nano - locked.held_nano, false) AS fits
      FROM wanted LEFT JOIN locked ON locked.id = wanted.account_id
), taken AS (
    SELECT account_id, max(upto_nano) AS total_nano FROM judged WHERE fits GROUP BY account_id
), added AS (
    UPDATE accounts SET held_nano = accounts.held_nano + taken.total_nano
      FROM taken WHERE accounts.id = taken.account_id
), placed AS (
    INSERT INTO holds ({names(holds, HOLD_COLUMNS)})
    SELECT {names(holds, HOLD_COLUMNS)} FROM judged WHERE fits
)
SELECT judged.fits, judged.balance_nano, judged.held_nano + judged.upto_nano,
       judged.balance_nano - judged.held_nano - coalesce(taken.total_nano, 0)
  FROM judged LEFT JOIN taken ON taken.account_id = judged.account_id
 WHERE (SELECT count(*) FROM locked) >= 0
 ORDER BY judged.ord
"""  # noqa: S608 (constants only)


async def place_holds(conn: Any, batch: Sequence[Hold], later: Sequence[int]) -> list[Placement]:
    """Each account's longest fitting prefix in one statement; then each refused
    hold again, in order, as if alone: the same results as one at a time."""
    rows = await conn.fetch(_PLACE_HOLDS, *_arrays(hold_row(hold) for hold in batch), list(later))
    room = {hold.account_id: row[3] or 0 for hold, row in zip(batch, rows, strict=True)}
    return [
        placed(hold, row[1], row[2]) if row[0] else await _retried(conn, hold, room)
        for hold, row in zip(batch, rows, strict=True)
    ]


async def _retried(conn: Any, hold: Hold, room: dict[int, int]) -> Placement:
    """A hold refused in its batch, tried alone. The batch holds its account's row,
    so `room` is exactly what is available: a hold larger than that is refused
    without a round trip, any other runs the single-write statement."""
    account, amount = hold.account_id, hold.amount_nano
    if amount > room[account]:
        return Placement(False, room[account])
    placement = await place_hold(conn, hold)
    room[account] = placement.available_nano - (amount if placement.placed else 0)
    return placement


# Parameters: one array per usage column and one of the holds' new states, then the
# accounts the batch's later statements change. A request id settled twice in the batch
# (its request's settlement and the reaper's) is claimed by its first only. The claim
# finds its holds by primary key: `IS TRUE` keeps the state index (every open hold, and
# the planner's pick on a table without statistics) out of it. All claims
# come first (`locked` reads `claimed` before it locks a row), then the accounts, in
# ascending id order, each changed once by the sums of its claims.
_SETTLE_MANY = f"""
WITH settling AS (
    SELECT DISTINCT ON (request_id) *
      FROM unnest({_pg_arrays(usage_records, USAGE_COLUMNS)},
                  ${len(USAGE_COLUMNS) + 1}::{pg_type(holds, "state")}[])
           WITH ORDINALITY AS s({names(usage_records, USAGE_COLUMNS)}, hold_state, ord)
     ORDER BY request_id, ord
), claimed AS (
    UPDATE holds SET state = settling.hold_state, resolved_ms = settling.settled_ms
      FROM settling
     WHERE holds.id = ANY(ARRAY(SELECT request_id FROM settling))
       AND holds.id = settling.request_id AND (holds.state = 'open') IS TRUE
       AND holds.account_id = settling.account_id AND holds.amount_nano = settling.held_nano
    RETURNING settling.*
), locked AS MATERIALIZED (
    SELECT id FROM accounts
     WHERE id = ANY(ARRAY(SELECT account_id FROM claimed) || ${len(USAGE_COLUMNS) + 2}::integer[])
     ORDER BY id FOR UPDATE
), owed AS (
    SELECT account_id, sum(held_nano) AS held_nano, sum(cost_nano) AS cost_nano
      FROM claimed GROUP BY account_id
), released AS (
    UPDATE accounts SET held_nano = accounts.held_nano - owed.held_nano,
                        balance_nano = accounts.balance_nano - owed.cost_nano
      FROM locked JOIN owed ON owed.account_id = locked.id
     WHERE accounts.id = locked.id
), debited AS (
    INSERT INTO ledger_entries ({DEBIT_COLUMNS})
    SELECT account_id, 'debit', -cost_nano, request_id, settled_by, settled_ms
      FROM claimed WHERE cost_nano > 0
), recorded AS (
    INSERT INTO usage_records ({names(usage_records, USAGE_COLUMNS)})
    SELECT {names(usage_records, USAGE_COLUMNS)} FROM claimed
)
SELECT ord FROM claimed WHERE (SELECT count(*) FROM locked) >= 0
"""  # noqa: S608 (constants only)
_OPEN_HOLDS = (
    "SELECT id, account_id, amount_nano FROM holds WHERE id = ANY($1::varchar[]) AND state = 'open'"
)


async def settle_many(conn: Any, batch: Sequence[Settlement], later: Sequence[int]) -> list[bool]:
    """All claims in one statement; the unclaimed are checked with one read after it."""
    rows = ((*usage_row(settlement), settlement.hold_state) for settlement in batch)
    claimed = {row[0] for row in await conn.fetch(_SETTLE_MANY, *_arrays(rows), list(later))}
    results = [i in claimed for i in range(1, len(batch) + 1)]
    missed = [s.hold for s, ok in zip(batch, results, strict=True) if not ok]
    if missed:
        ids = [hold.request_id for hold in missed]
        still_open = {row[0]: row[1:] for row in await conn.fetch(_OPEN_HOLDS, ids)}
        for hold in missed:
            unclaimed(hold, still_open.get(hold.request_id))
    return results


SettleMany = Callable[[Any, Sequence[Settlement], Sequence[int]], Awaitable[list[bool]]]
PlaceHolds = Callable[[Any, Sequence[Hold], Sequence[int]], Awaitable[list[Placement]]]


async def run_batch(
    conn: Any,
    writes: Sequence[LedgerWrite],
    *,
    settle: SettleMany = settle_many,
    place: PlaceHolds = place_holds,
) -> list[Placement | bool]:
    """Settlements, then holds, each kind as one statement inside the caller's
    transaction; results in `writes`' order. `settle` and `place` stand in for
    `settle_many` and `place_holds` (a test watches what they are told)."""
    settling: list[int] = []
    settlements: list[Settlement] = []
    holding: list[int] = []
    new_holds: list[Hold] = []
    for i, write in enumerate(writes):
        if isinstance(write, Hold):
            holding.append(i)
            new_holds.append(write)
        else:
            settling.append(i)
            settlements.append(write)
    results: list[Placement | bool] = [False] * len(writes)
    if settlements:
        later = sorted({hold.account_id for hold in new_holds})
        settled = await settle(conn, settlements, later)
        for i, claimed, settlement in zip(settling, settled, settlements, strict=True):
            results[i] = claimed
            if claimed and settlement.hold.budgeted:
                await settle_budgets(conn, settlement)
    pairs = list(zip(holding, new_holds, strict=True))
    plain = [(i, hold) for i, hold in pairs if not hold.budgeted and hold.idempotency_key is None]
    budgeted = [(i, hold) for i, hold in pairs if hold.budgeted or hold.idempotency_key is not None]
    if plain:
        later = sorted({hold.account_id for _, hold in budgeted})
        placements = await place(conn, [hold for _, hold in plain], later)
        for (i, _), placement in zip(plain, placements, strict=True):
            results[i] = placement
    for i, hold in budgeted:  # after the plain holds, each alone on its locked account
        # (a hold with an Idempotency-Key too: it looks for its key's prior hold first)
        results[i] = await place_hold(conn, hold)
    return results
