"""The two-phase ledger on SQL: `Ledger` implements `teegate.billing.LedgerStore`.

Writes (holds, settlements) go through the group committer, which hands each
batch to its engine's writer: `_ledger_sqlite.py` on SQLite,
`_ledger_postgres.py` (one write) or `_ledger_postgres_batch.py` (several) on
PostgreSQL. Each keeps the same rules: a hold is one conditional UPDATE, so no
read-then-write race can overdraw an account; a settlement moves its hold out of
'open' with a conditional UPDATE too, so a second settlement of the same request
changes nothing (exactly once); the debit entry, the balance it changes, the
hold's release and the usage record commit together.

Reads (and the reaper's query) go through SQLAlchemy, here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from sqlalchemy import bindparam, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import (
    Balance,
    BudgetUse,
    Hold,
    Placement,
    Renewal,
    Settlement,
    UsageQuery,
    UsageRecord,
    period_start,
)
from teegate.store._group import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, GroupCommitter
from teegate.store._ledger_rows import hold_record, usage_record, usage_select
from teegate.store._outage import outage_as_unavailable
from teegate.store._schema import accounts, budgets, holds, usage_records
from teegate.store._writers import Writer

_BUDGETED = (
    exists()
    .where(budgets.c.account_id == holds.c.account_id, budgets.c.key_id.in_(["", holds.c.key_id]))
    .label("budgeted")
)
"""A hold read back (by the reaper) moves budgets if its key or account has one now."""


_RENEW = (
    update(holds)
    .where(holds.c.id == bindparam("rid"), holds.c.state == "open")
    .values(output_bytes=bindparam("bytes"))
)


class Ledger:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
        writer: Writer | None = None,
    ) -> None:
        """`writer` runs the batches (by default, the engine's own: `SqliteWriter` or
        `PostgresWriter`); the ledger closes it when it stops running."""
        self.engine = engine
        self.writer = GroupCommitter(
            engine, max_batch=max_batch, max_queue=max_queue, writer=writer
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Ledger]:
        """Writes are accepted inside this block (the group-commit writer runs)."""
        async with self.writer.running():
            yield self

    async def place_hold(self, hold: Hold) -> Placement:
        return await self.writer.submit(hold.account_id, hold)

    async def settle(self, settlement: Settlement) -> bool:
        return await self.writer.submit(settlement.hold.account_id, settlement)

    async def expired_holds(self, now_ms: int, ttl_ms: int, limit: int) -> list[Hold]:
        leased = func.coalesce(holds.c.renewed_ms, holds.c.created_ms)
        query = (
            select(holds, _BUDGETED)
            .where(
                holds.c.state == "open",
                or_(holds.c.expires_ms <= now_ms, leased <= now_ms - ttl_ms),
            )
            .order_by(holds.c.created_ms, holds.c.id)
            .limit(limit)
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [hold_record(row) for row in rows]

    async def renew_holds(self, renewals: Sequence[Renewal], now_ms: int, expires_ms: int) -> None:
        """One transaction, whatever the number of holds: one commit per renewal period."""
        if not renewals:
            return
        rows = [{"rid": r.request_id, "bytes": r.output_bytes} for r in renewals]
        async with outage_as_unavailable(), self.engine.begin() as conn:
            await conn.execute(_RENEW.values(renewed_ms=now_ms, expires_ms=expires_ms), rows)

    async def open_holds(self, account_id: int | None = None) -> list[Hold]:
        query = select(holds, _BUDGETED).where(holds.c.state == "open").order_by(holds.c.created_ms)
        if account_id is not None:
            query = query.where(holds.c.account_id == account_id)
        async with outage_as_unavailable(), self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [hold_record(row) for row in rows]

    async def balance(self, account_id: int) -> Balance | None:
        query = select(accounts.c.balance_nano, accounts.c.held_nano).where(
            accounts.c.id == account_id
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Balance(account_id, row.balance_nano, row.held_nano)

    async def budgets(self, account_id: int, key_id: str, now_ms: int) -> list[BudgetUse]:
        query = (
            select(budgets)
            .where(budgets.c.account_id == account_id, budgets.c.key_id.in_(["", key_id]))
            .order_by(budgets.c.key_id.desc(), budgets.c.period)
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            BudgetUse(
                row.key_id or None,
                row.period,
                row.limit_nano,
                0 if row.period_start_ms < period_start(row.period, now_ms) else row.spent_nano,
                row.held_nano,
            )
            for row in rows
        ]

    async def usage(self, query: UsageQuery) -> list[UsageRecord]:
        statement = usage_select().limit(query.limit)
        if query.account_id is not None:
            statement = statement.where(usage_records.c.account_id == query.account_id)
        if query.account_name is not None:
            statement = statement.where(accounts.c.name == query.account_name)
        if query.since_ms is not None:
            statement = statement.where(usage_records.c.started_ms >= query.since_ms)
        async with outage_as_unavailable(), self.engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [usage_record(row) for row in rows]

    async def generation(self, account_id: int, request_id: str) -> UsageRecord | None:
        statement = usage_select().where(
            usage_records.c.request_id == request_id, usage_records.c.account_id == account_id
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else usage_record(row)
