"""The ledger's writes on PostgreSQL, one at a time: each is one statement.

The PostgreSQL writer (`_postgres_writer.py`) runs `apply` on its own asyncpg
connection for a batch of one. Each write makes all its changes in one statement
(data-modifying CTEs), which commits on its own outside a transaction block: no
BEGIN or COMMIT round trips when writes arrive one at a time. Anything after that
statement may only read. The batch path (`_ledger_postgres_batch.py`) binds the same
rows, and retries a refused hold through `place_hold` here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql.base import PGDialect

from teegate.billing import Hold, Placement, Settlement
from teegate.store._ledger_budgets import (
    PG_HOLD,
    PG_OVER,
    PG_SETTLE,
    PG_UNHOLD,
    budget_use,
    hold_params,
    pg_args,
    settle_params,
)
from teegate.store._ledger_rows import (
    DEBIT_COLUMNS,
    HOLD_COLUMNS,
    KEYED_HOLD_COLUMNS,
    PRIOR_IS_FREE,
    USAGE_COLUMNS,
    LedgerWrite,
    hold_row,
    keyed_hold_row,
    names,
    placed,
    prior_hold,
    refused,
    unclaimed,
    usage_row,
)
from teegate.store._schema import holds, usage_records


async def apply(conn: Any, write: LedgerWrite) -> Placement | bool:
    """Run one write as one statement; what its kind returns."""
    if isinstance(write, Hold):
        return await place_hold(conn, write)
    return await settle(conn, write)


def pg_type(table: Table, name: str) -> str:
    return str(table.c[name].type.compile(dialect=PGDialect()))  # type: ignore[no-untyped-call]


def _pg_values(table: Table, columns: tuple[str, ...]) -> str:
    """$1::TYPE, $2::TYPE, ...: in INSERT ... SELECT, PostgreSQL cannot infer the types."""
    return ", ".join(f"${i}::{pg_type(table, name)}" for i, name in enumerate(columns, 1))


_H = {name: f"${i}" for i, name in enumerate(HOLD_COLUMNS, 1)}
_U = {name: f"${i}" for i, name in enumerate(USAGE_COLUMNS, 1)}
_U_STATE = f"${len(USAGE_COLUMNS) + 1}"  # the hold's new state follows the usage row

# Parameters: the hold row. The INSERT reads `fitted`, so it runs only if the hold fits.
_PLACE_HOLD = f"""
WITH fitted AS (
    UPDATE accounts SET held_nano = held_nano + {_H["amount_nano"]}
     WHERE id = {_H["account_id"]} AND balance_nano - held_nano >= {_H["amount_nano"]}
    RETURNING balance_nano, held_nano
), placed AS (
    INSERT INTO holds ({names(holds, HOLD_COLUMNS)})
    SELECT {_pg_values(holds, HOLD_COLUMNS)} FROM fitted
)
SELECT balance_nano, held_nano FROM fitted
"""  # noqa: S608 (constants only)
_AVAILABLE = "SELECT balance_nano - held_nano FROM accounts WHERE id = $1"


async def place_hold(conn: Any, hold: Hold) -> Placement:
    """One conditional UPDATE decides; the hold row follows in the same statement.
    A budgeted or keyed hold takes a transaction of its own (a savepoint inside a
    batch's)."""
    if hold.budgeted or hold.idempotency_key is not None:
        async with conn.transaction():
            return await _place_alone(conn, hold)
    row = await conn.fetchrow(_PLACE_HOLD, *hold_row(hold))
    if row is None:
        return refused(await conn.fetchrow(_AVAILABLE, hold.account_id))
    return placed(hold, row[0], row[1])


_HOLD_IF_IT_FITS = (
    "UPDATE accounts SET held_nano = held_nano + $1"
    " WHERE id = $2 AND balance_nano - held_nano >= $1 RETURNING balance_nano, held_nano"
)
_INSERT_HOLD = (
    f"INSERT INTO holds ({names(holds, HOLD_COLUMNS)})"  # noqa: S608 (constants only)
    f" VALUES ({_pg_values(holds, HOLD_COLUMNS)})"
)


_LOCK_ACCOUNT = "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE"
_PRIOR = "SELECT id, state, fingerprint FROM holds WHERE account_id = $1 AND idempotency_key = $2"
_FREE_KEY = "UPDATE holds SET idempotency_key = NULL WHERE id = $1"
_INSERT_KEYED_HOLD = (
    f"INSERT INTO holds ({names(holds, KEYED_HOLD_COLUMNS)})"  # noqa: S608 (constants only)
    f" VALUES ({_pg_values(holds, KEYED_HOLD_COLUMNS)})"
)


async def _place_alone(conn: Any, hold: Hold) -> Placement:
    """The account's conditional UPDATE first (it locks the row), then the budgets.
    A keyed hold locks the account row before it looks for its key's prior hold:
    every hold of the account takes that lock, so two requests with one key, on two
    connections, cannot both find none."""
    if hold.idempotency_key is not None:
        await conn.execute(_LOCK_ACCOUNT, hold.account_id)
        prior = await conn.fetchrow(_PRIOR, hold.account_id, hold.idempotency_key)
        if prior is not None and prior[1] != PRIOR_IS_FREE:
            available = await conn.fetchrow(_AVAILABLE, hold.account_id)
            return replace(refused(available), prior=prior_hold(hold, prior))
        if prior is not None:
            await conn.execute(_FREE_KEY, prior[0])
    row = await conn.fetchrow(_HOLD_IF_IT_FITS, hold.amount_nano, hold.account_id)
    if row is None:
        return refused(await conn.fetchrow(_AVAILABLE, hold.account_id))
    if hold.budgeted:
        args = pg_args(hold_params(hold))
        over = await conn.fetchrow(PG_OVER, *args)
        if over is not None:
            await conn.execute(PG_UNHOLD, hold.amount_nano, hold.account_id)
            return Placement(False, row[0] - row[1] + hold.amount_nano, budget_use(over))
        await conn.execute(PG_HOLD, *args)
    if hold.idempotency_key is None:
        await conn.execute(_INSERT_HOLD, *hold_row(hold))
    else:
        await conn.execute(_INSERT_KEYED_HOLD, *keyed_hold_row(hold))
    return placed(hold, row[0], row[1])


# Parameters: the usage row, then the hold's new state. The claim locks the hold row,
# then `released` the account row (it reads `claimed`): the order of the separate
# statements this replaces. Nothing but the claim changes unless the claim matched.
_SETTLE = f"""
WITH claimed AS (
    UPDATE holds SET state = {_U_STATE}, resolved_ms = {_U["settled_ms"]}
     WHERE id = {_U["request_id"]} AND state = 'open'
       AND account_id = {_U["account_id"]} AND amount_nano = {_U["held_nano"]}
    RETURNING account_id
), released AS (
    UPDATE accounts SET held_nano = held_nano - {_U["held_nano"]},
                        balance_nano = balance_nano - {_U["cost_nano"]}
     WHERE id = (SELECT account_id FROM claimed)
), debited AS (
    INSERT INTO ledger_entries ({DEBIT_COLUMNS})
    SELECT account_id, 'debit', -{_U["cost_nano"]}, {_U["request_id"]}, {_U["settled_by"]},
           {_U["settled_ms"]}
      FROM claimed WHERE {_U["cost_nano"]} > 0
), recorded AS (
    INSERT INTO usage_records ({names(usage_records, USAGE_COLUMNS)})
    SELECT {_pg_values(usage_records, USAGE_COLUMNS)} FROM claimed
)
SELECT count(*) FROM claimed
"""  # noqa: S608 (constants only)
_OPEN_HOLD = "SELECT account_id, amount_nano FROM holds WHERE id = $1 AND state = 'open'"


async def settle(conn: Any, settlement: Settlement) -> bool:
    """Resolve the hold if still open, with its debit and usage record, in one statement.

    The claim matches the hold's account and amount too, so a settlement that does
    not match its hold changes nothing before the invariant reports it.
    """
    hold = settlement.hold
    if hold.budgeted:
        async with conn.transaction():
            claimed = await conn.fetchval(_SETTLE, *usage_row(settlement), settlement.hold_state)
            if claimed:
                await settle_budgets(conn, settlement)
    else:
        claimed = await conn.fetchval(_SETTLE, *usage_row(settlement), settlement.hold_state)
    if claimed == 0:
        return unclaimed(hold, await conn.fetchrow(_OPEN_HOLD, hold.request_id))
    return True


async def settle_budgets(conn: Any, settlement: Settlement) -> None:
    """After the settlement's claim and release (its account row is locked)."""
    await conn.execute(PG_SETTLE, *pg_args(settle_params(settlement)))
