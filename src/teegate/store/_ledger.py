"""The two-phase ledger on SQL: holds, settlements, usage records and the reaper's query.

`Ledger` implements `teegate.billing.LedgerStore`. A hold is one conditional
UPDATE, so no read-then-write race can overdraw an account, on either engine:

    UPDATE accounts SET held_nano = held_nano + :amount
     WHERE id = :account AND balance_nano - held_nano >= :amount

A settlement moves a hold out of 'open' with a conditional UPDATE too, so a
second settlement of the same request changes nothing (exactly once). The
debit entry, the balance it changes, the hold's release and the usage record
commit together. Writes go through the group committer, as plain SQL on the
writer's own connection (they are every request's hot path); reads go through
SQLAlchemy.

On PostgreSQL a batch's holds are one statement and its settlements another.
The holds' statement decides on account rows it has locked (SELECT ... FOR
UPDATE), placing each account's longest prefix that fits; the settlements'
claims are still conditional UPDATEs of the holds, one claim per request id.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import Select, Table, or_, select
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import (
    Balance,
    Hold,
    Placement,
    Rates,
    Settlement,
    UsageQuery,
    UsageRecord,
    invariant,
)
from teegate.store._group import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, GroupCommitter
from teegate.store._outage import outage_as_unavailable
from teegate.store._schema import accounts, holds, ledger_entries, usage_records


class Ledger:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.engine = engine
        self.writer = GroupCommitter(engine, max_batch=max_batch, max_queue=max_queue)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Ledger]:
        """Writes are accepted inside this block (the group-commit writer runs)."""
        async with self.writer.running():
            yield self

    async def place_hold(self, hold: Hold) -> Placement:
        return await self.writer.submit(hold.account_id, _PlaceHold(hold))

    async def settle(self, settlement: Settlement) -> bool:
        return await self.writer.submit(settlement.hold.account_id, _Settle(settlement))

    async def expired_holds(self, now_ms: int, ttl_ms: int, limit: int) -> list[Hold]:
        query = (
            select(holds)
            .where(
                holds.c.state == "open",
                or_(holds.c.expires_ms <= now_ms, holds.c.created_ms <= now_ms - ttl_ms),
            )
            .order_by(holds.c.created_ms, holds.c.id)
            .limit(limit)
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_hold(row) for row in rows]

    async def open_holds(self, account_id: int | None = None) -> list[Hold]:
        query = select(holds).where(holds.c.state == "open").order_by(holds.c.created_ms)
        if account_id is not None:
            query = query.where(holds.c.account_id == account_id)
        async with outage_as_unavailable(), self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_hold(row) for row in rows]

    async def balance(self, account_id: int) -> Balance | None:
        query = select(accounts.c.balance_nano, accounts.c.held_nano).where(
            accounts.c.id == account_id
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Balance(account_id, row.balance_nano, row.held_nano)

    async def usage(self, query: UsageQuery) -> list[UsageRecord]:
        statement = _usage_select().limit(query.limit)
        if query.account_id is not None:
            statement = statement.where(usage_records.c.account_id == query.account_id)
        if query.account_name is not None:
            statement = statement.where(accounts.c.name == query.account_name)
        if query.since_ms is not None:
            statement = statement.where(usage_records.c.started_ms >= query.since_ms)
        async with outage_as_unavailable(), self.engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_usage_record(row) for row in rows]

    async def generation(self, account_id: int, request_id: str) -> UsageRecord | None:
        statement = _usage_select().where(
            usage_records.c.request_id == request_id, usage_records.c.account_id == account_id
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else _usage_record(row)


# The writes ---------------------------------------------------------------------------
#
# Plain SQL, run by the group committer's writer on the driver's own connection (see
# `_sqlite_writer.py`, `_postgres_writer.py`): these few statements are every
# request's, so they skip SQLAlchemy.
# SQLite runs them as separate statements in one transaction. PostgreSQL runs each
# as one statement (data-modifying CTEs), and a batch's writes of one kind as one
# statement too, bound as arrays (unnest ... WITH ORDINALITY keeps each write's
# position). Both take the rows below, whose column lists are written once.

_HOLD_COLUMNS = (
    "id", "account_id", "key_id", "model", "stream", "prompt_price_nano",
    "completion_price_nano", "prompt_tokens", "completion_tokens", "amount_nano", "state",
    "created_ms", "expires_ms",
)  # fmt: skip
_USAGE_COLUMNS = (
    "request_id", "account_id", "key_id", "model", "stream", "prompt_tokens",
    "completion_tokens", "cost_nano", "held_nano", "settled_by", "status", "capped",
    "started_ms", "settled_ms",
)  # fmt: skip


def _hold_row(hold: Hold) -> tuple[Any, ...]:
    return (
        hold.request_id, hold.account_id, hold.key_id, hold.model, hold.stream,
        hold.rates.prompt_nano_per_mtok, hold.rates.completion_nano_per_mtok,
        hold.prompt_tokens, hold.completion_tokens, hold.amount_nano, "open",
        hold.created_ms, hold.expires_ms,
    )  # fmt: skip


def _usage_row(settlement: Settlement) -> tuple[Any, ...]:
    hold = settlement.hold
    return (
        hold.request_id, hold.account_id, hold.key_id, hold.model, hold.stream,
        settlement.prompt_tokens, settlement.completion_tokens, settlement.cost_nano,
        hold.amount_nano, settlement.settled_by, settlement.status, settlement.capped,
        hold.created_ms, settlement.settled_ms,
    )  # fmt: skip


def _names(table: Table, columns: tuple[str, ...]) -> str:
    return ", ".join(table.c[name].name for name in columns)  # a typo fails at import


def _pg_type(table: Table, name: str) -> str:
    return str(table.c[name].type.compile(dialect=PGDialect()))  # type: ignore[no-untyped-call]


def _pg_values(table: Table, columns: tuple[str, ...]) -> str:
    """$1::TYPE, $2::TYPE, ...: in INSERT ... SELECT, PostgreSQL cannot infer the types."""
    return ", ".join(f"${i}::{_pg_type(table, name)}" for i, name in enumerate(columns, 1))


def _pg_arrays(table: Table, columns: tuple[str, ...]) -> str:
    """$1::TYPE[], $2::TYPE[], ...: a batch's rows, bound one array per column."""
    return ", ".join(f"${i}::{_pg_type(table, name)}[]" for i, name in enumerate(columns, 1))


_DEBIT_COLUMNS = _names(
    ledger_entries, ("account_id", "kind", "amount_nano", "reference", "memo", "created_ms")
)
_H = {name: f"${i}" for i, name in enumerate(_HOLD_COLUMNS, 1)}
_U = {name: f"${i}" for i, name in enumerate(_USAGE_COLUMNS, 1)}
_U_STATE = f"${len(_USAGE_COLUMNS) + 1}"  # the hold's new state follows the usage row

_SQLITE_HOLD_IF_IT_FITS = (
    "UPDATE accounts SET held_nano = held_nano + ?1"
    " WHERE id = ?2 AND balance_nano - held_nano >= ?1"
    " RETURNING balance_nano, held_nano"
)
_SQLITE_AVAILABLE = "SELECT balance_nano - held_nano FROM accounts WHERE id = ?"
_SQLITE_INSERT_HOLD = (
    f"INSERT INTO holds ({_names(holds, _HOLD_COLUMNS)})"  # noqa: S608 (constants only)
    f" VALUES ({', '.join('?' * len(_HOLD_COLUMNS))})"
)
_SQLITE_CLAIM_OPEN_HOLD = (
    "UPDATE holds SET state = ?, resolved_ms = ?"
    " WHERE id = ? AND state = 'open' AND account_id = ? AND amount_nano = ?"
)
_SQLITE_RELEASE_AND_DEBIT = (
    "UPDATE accounts SET held_nano = held_nano - ?, balance_nano = balance_nano - ? WHERE id = ?"
)
_SQLITE_INSERT_DEBIT = (
    f"INSERT INTO ledger_entries ({_DEBIT_COLUMNS}) VALUES (?, 'debit', ?, ?, ?, ?)"  # noqa: S608
)
_SQLITE_INSERT_USAGE = (
    f"INSERT INTO usage_records ({_names(usage_records, _USAGE_COLUMNS)})"  # noqa: S608 (constants)
    f" VALUES ({', '.join('?' * len(_USAGE_COLUMNS))})"
)
_SQLITE_OPEN_HOLD = "SELECT account_id, amount_nano FROM holds WHERE id = ? AND state = 'open'"

# Parameters: the hold row. The INSERT reads `fitted`, so it runs only if the hold fits.
_PG_PLACE_HOLD = f"""
WITH fitted AS (
    UPDATE accounts SET held_nano = held_nano + {_H["amount_nano"]}
     WHERE id = {_H["account_id"]} AND balance_nano - held_nano >= {_H["amount_nano"]}
    RETURNING balance_nano, held_nano
), placed AS (
    INSERT INTO holds ({_names(holds, _HOLD_COLUMNS)})
    SELECT {_pg_values(holds, _HOLD_COLUMNS)} FROM fitted
)
SELECT balance_nano, held_nano FROM fitted
"""  # noqa: S608 (constants only)
_PG_AVAILABLE = "SELECT balance_nano - held_nano FROM accounts WHERE id = $1"

# Parameters: the usage row, then the hold's new state. The claim locks the hold row,
# then `released` the account row (it reads `claimed`): the order of the separate
# statements this replaces. Nothing but the claim changes unless the claim matched.
_PG_SETTLE = f"""
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
    INSERT INTO ledger_entries ({_DEBIT_COLUMNS})
    SELECT account_id, 'debit', -{_U["cost_nano"]}, {_U["request_id"]}, {_U["settled_by"]},
           {_U["settled_ms"]}
      FROM claimed WHERE {_U["cost_nano"]} > 0
), recorded AS (
    INSERT INTO usage_records ({_names(usage_records, _USAGE_COLUMNS)})
    SELECT {_pg_values(usage_records, _USAGE_COLUMNS)} FROM claimed
)
SELECT count(*) FROM claimed
"""  # noqa: S608 (constants only)
_PG_OPEN_HOLD = "SELECT account_id, amount_nano FROM holds WHERE id = $1 AND state = 'open'"

# Parameters: one array per hold column, then the accounts the batch's later statements
# change. Per account, the longest prefix of its holds (in batch order) whose running
# sum fits is placed, decided on the locked rows; the rest are refused here and retried
# alone. `locked` takes the accounts in ascending id order, all of them before the
# rows come out (the one-time filter reads it to the end first).
_PG_PLACE_HOLDS = f"""
WITH wanted AS (
    SELECT w.*, (sum(w.amount_nano) OVER (PARTITION BY w.account_id ORDER BY w.ord))::bigint
                AS upto_nano
      FROM unnest({_pg_arrays(holds, _HOLD_COLUMNS)})
           WITH ORDINALITY AS w({_names(holds, _HOLD_COLUMNS)}, ord)
), locked AS MATERIALIZED (
    SELECT id, balance_nano, held_nano FROM accounts
     WHERE id = ANY(ARRAY(SELECT account_id FROM wanted) || ${len(_HOLD_COLUMNS) + 1}::integer[])
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
    INSERT INTO holds ({_names(holds, _HOLD_COLUMNS)})
    SELECT {_names(holds, _HOLD_COLUMNS)} FROM judged WHERE fits
)
SELECT judged.fits, judged.balance_nano, judged.held_nano + judged.upto_nano,
       judged.balance_nano - judged.held_nano - coalesce(taken.total_nano, 0)
  FROM judged LEFT JOIN taken ON taken.account_id = judged.account_id
 WHERE (SELECT count(*) FROM locked) >= 0
 ORDER BY judged.ord
"""  # noqa: S608 (constants only)

# Parameters: one array per usage column and one of the holds' new states, then the
# accounts the batch's later statements change. A request id settled twice in the batch
# (its request's settlement and the reaper's) is claimed by its first only. The claim
# finds its holds by primary key: `IS TRUE` keeps the state index (every open hold, and
# the planner's pick on a table without statistics) out of it. All claims
# come first (`locked` reads `claimed` before it locks a row), then the accounts, in
# ascending id order, each changed once by the sums of its claims.
_PG_SETTLE_MANY = f"""
WITH settling AS (
    SELECT DISTINCT ON (request_id) *
      FROM unnest({_pg_arrays(usage_records, _USAGE_COLUMNS)},
                  ${len(_USAGE_COLUMNS) + 1}::{_pg_type(holds, "state")}[])
           WITH ORDINALITY AS s({_names(usage_records, _USAGE_COLUMNS)}, hold_state, ord)
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
     WHERE id = ANY(ARRAY(SELECT account_id FROM claimed) || ${len(_USAGE_COLUMNS) + 2}::integer[])
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
    INSERT INTO ledger_entries ({_DEBIT_COLUMNS})
    SELECT account_id, 'debit', -cost_nano, request_id, settled_by, settled_ms
      FROM claimed WHERE cost_nano > 0
), recorded AS (
    INSERT INTO usage_records ({_names(usage_records, _USAGE_COLUMNS)})
    SELECT {_names(usage_records, _USAGE_COLUMNS)} FROM claimed
)
SELECT ord FROM claimed WHERE (SELECT count(*) FROM locked) >= 0
"""  # noqa: S608 (constants only)
_PG_OPEN_HOLDS = (
    "SELECT id, account_id, amount_nano FROM holds WHERE id = ANY($1::varchar[]) AND state = 'open'"
)


@dataclass(frozen=True, slots=True)
class _PlaceHold:
    """One conditional UPDATE decides; the hold row follows in the same transaction."""

    batch_phase: ClassVar[int] = 1  # after settlements: their claims come before any lock

    hold: Hold

    @property
    def account_id(self) -> int:
        return self.hold.account_id

    def on_sqlite(self, conn: sqlite3.Connection) -> Placement:
        hold = self.hold
        row = conn.execute(_SQLITE_HOLD_IF_IT_FITS, (hold.amount_nano, hold.account_id)).fetchone()
        if row is None:
            available = conn.execute(_SQLITE_AVAILABLE, (hold.account_id,)).fetchone()
            return _refused(available)
        conn.execute(_SQLITE_INSERT_HOLD, _hold_row(hold))
        return _placed(hold, row[0], row[1])

    async def on_postgres(self, conn: Any) -> Placement:
        hold = self.hold
        row = await conn.fetchrow(_PG_PLACE_HOLD, *_hold_row(hold))
        if row is None:
            return _refused(await conn.fetchrow(_PG_AVAILABLE, hold.account_id))
        return _placed(hold, row[0], row[1])

    @classmethod
    async def on_postgres_batch(
        cls, conn: Any, writes: Sequence[_PlaceHold], later: Sequence[int]
    ) -> list[Placement]:
        """Each account's longest fitting prefix in one statement; then each refused
        hold again, in order, as if alone: the same results as one at a time."""
        rows = await conn.fetch(
            _PG_PLACE_HOLDS, *_arrays(_hold_row(w.hold) for w in writes), list(later)
        )
        room = {w.account_id: row[3] or 0 for w, row in zip(writes, rows, strict=True)}
        return [
            _placed(w.hold, row[1], row[2]) if row[0] else await w._retried(conn, room)
            for w, row in zip(writes, rows, strict=True)
        ]

    async def _retried(self, conn: Any, room: dict[int, int]) -> Placement:
        """A hold refused in its batch, tried alone. The batch holds its account's row,
        so `room` is exactly what is available: a hold larger than that is refused
        without a round trip, any other runs the single-write statement."""
        account, amount = self.hold.account_id, self.hold.amount_nano
        if amount > room[account]:
            return Placement(False, room[account])
        placement = await self.on_postgres(conn)
        room[account] = placement.available_nano - (amount if placement.placed else 0)
        return placement


@dataclass(frozen=True, slots=True)
class _Settle:
    """Resolve the hold if still open; post the debit and write the usage record.

    The claim matches the hold's account and amount too, so a settlement that does
    not match its hold changes nothing before the invariant reports it.
    """

    batch_phase: ClassVar[int] = 0  # first: its claims come before any account lock

    settlement: Settlement

    @property
    def account_id(self) -> int:
        return self.settlement.hold.account_id

    def on_sqlite(self, conn: sqlite3.Connection) -> bool:
        settlement, hold = self.settlement, self.settlement.hold
        claimed = conn.execute(
            _SQLITE_CLAIM_OPEN_HOLD,
            (settlement.hold_state, settlement.settled_ms, hold.request_id, hold.account_id,
             hold.amount_nano),
        ).rowcount  # fmt: skip
        if claimed == 0:
            return _unclaimed(hold, conn.execute(_SQLITE_OPEN_HOLD, (hold.request_id,)).fetchone())
        conn.execute(
            _SQLITE_RELEASE_AND_DEBIT, (hold.amount_nano, settlement.cost_nano, hold.account_id)
        )
        if settlement.cost_nano > 0:
            conn.execute(
                _SQLITE_INSERT_DEBIT,
                (hold.account_id, -settlement.cost_nano, hold.request_id, settlement.settled_by,
                 settlement.settled_ms),
            )  # fmt: skip
        conn.execute(_SQLITE_INSERT_USAGE, _usage_row(settlement))
        return True

    async def on_postgres(self, conn: Any) -> bool:
        settlement, hold = self.settlement, self.settlement.hold
        claimed = await conn.fetchval(_PG_SETTLE, *_usage_row(settlement), settlement.hold_state)
        if claimed == 0:
            return _unclaimed(hold, await conn.fetchrow(_PG_OPEN_HOLD, hold.request_id))
        return True

    @classmethod
    async def on_postgres_batch(
        cls, conn: Any, writes: Sequence[_Settle], later: Sequence[int]
    ) -> list[bool]:
        """All claims in one statement; the unclaimed are checked with one read after it."""
        rows = ((*_usage_row(w.settlement), w.settlement.hold_state) for w in writes)
        claimed = {row[0] for row in await conn.fetch(_PG_SETTLE_MANY, *_arrays(rows), list(later))}
        results = [i in claimed for i in range(1, len(writes) + 1)]
        unclaimed = [w.settlement.hold for w, ok in zip(writes, results, strict=True) if not ok]
        if unclaimed:
            ids = [hold.request_id for hold in unclaimed]
            still_open = {row[0]: row[1:] for row in await conn.fetch(_PG_OPEN_HOLDS, ids)}
            for hold in unclaimed:
                _unclaimed(hold, still_open.get(hold.request_id))
        return results


def _arrays(rows: Iterable[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as columns: one array parameter per column, for unnest."""
    return [list(column) for column in zip(*rows, strict=True)]


def _placed(hold: Hold, balance_nano: int, held_nano: int) -> Placement:
    invariant(held_nano <= balance_nano, f"hold {hold.request_id} overdrew its account")
    return Placement(True, balance_nano - held_nano + hold.amount_nano)


def _refused(available: Any) -> Placement:
    return Placement(False, int(available[0]) if available is not None else 0)


def _unclaimed(hold: Hold, open_hold: Any) -> bool:
    """No open hold matched: resolved already (False), unless the open hold by that id
    is another account's or amount (a bug, reported before anything changed)."""
    invariant(
        open_hold is None or (open_hold[0], open_hold[1]) == (hold.account_id, hold.amount_nano),
        f"settlement of {hold.request_id} does not match its hold",
    )
    return False


def _hold(row: Any) -> Hold:
    return Hold(
        request_id=row.id,
        account_id=row.account_id,
        key_id=row.key_id,
        model=row.model,
        stream=bool(row.stream),
        rates=Rates(row.prompt_price_nano, row.completion_price_nano),
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        amount_nano=row.amount_nano,
        created_ms=row.created_ms,
        expires_ms=row.expires_ms,
    )


def _usage_select() -> Select[Any]:
    return (
        select(usage_records, accounts.c.name.label("account_name"))
        .join(accounts, accounts.c.id == usage_records.c.account_id)
        .order_by(usage_records.c.started_ms.desc(), usage_records.c.request_id)
    )


def _usage_record(row: Any) -> UsageRecord:
    return UsageRecord(
        request_id=row.request_id,
        account_id=row.account_id,
        account=row.account_name,
        key_id=row.key_id,
        model=row.model,
        stream=bool(row.stream),
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_nano=row.cost_nano,
        held_nano=row.held_nano,
        settled_by=row.settled_by,
        status=row.status,
        capped=bool(row.capped),
        started_ms=row.started_ms,
        settled_ms=row.settled_ms,
    )
