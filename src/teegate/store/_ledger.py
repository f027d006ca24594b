"""The two-phase ledger on SQL: holds, settlements, usage records and the reaper's query.

`Ledger` implements `teegate.billing.LedgerStore`. A hold is one conditional
UPDATE, so no read-then-write race can overdraw an account, on either engine:

    UPDATE accounts SET held_nano = held_nano + :amount
     WHERE id = :account AND balance_nano - held_nano >= :amount

A settlement moves a hold out of 'open' with a conditional UPDATE too, so a
second settlement of the same request changes nothing (exactly once). The
debit entry, the balance it changes, the hold's release and the usage record
commit together. Writes go through the group committer; reads do not.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Select, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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
        placement: Placement = await self.writer.submit(
            hold.account_id, lambda conn: _place_hold(conn, hold)
        )
        return placement

    async def settle(self, settlement: Settlement) -> bool:
        resolved: bool = await self.writer.submit(
            settlement.hold.account_id, lambda conn: _settle(conn, settlement)
        )
        return resolved

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


# Statements are built once: per-write cost is then binding and the round trip.
_HOLD_IF_IT_FITS = (
    update(accounts)
    .where(
        accounts.c.id == bindparam("p_account"),
        accounts.c.balance_nano - accounts.c.held_nano >= bindparam("p_amount"),
    )
    .values(held_nano=accounts.c.held_nano + bindparam("p_amount"))
    .returning(accounts.c.balance_nano, accounts.c.held_nano)
)
_AVAILABLE = select(accounts.c.balance_nano - accounts.c.held_nano).where(
    accounts.c.id == bindparam("p_account")
)
_CLAIM_OPEN_HOLD = (
    update(holds)
    .where(holds.c.id == bindparam("p_id"), holds.c.state == "open")
    .values(state=bindparam("p_state"), resolved_ms=bindparam("p_resolved_ms"))
    .returning(holds.c.account_id, holds.c.amount_nano)
)
_RELEASE_AND_DEBIT = (
    update(accounts)
    .where(accounts.c.id == bindparam("p_account"))
    .values(
        held_nano=accounts.c.held_nano - bindparam("p_held"),
        balance_nano=accounts.c.balance_nano - bindparam("p_cost"),
    )
)
_INSERT_HOLD = insert(holds)
_INSERT_ENTRY = insert(ledger_entries)
_INSERT_USAGE = insert(usage_records)


async def _place_hold(conn: AsyncConnection, hold: Hold) -> Placement:
    """One conditional UPDATE decides; the hold row follows in the same transaction."""
    fitted = await conn.execute(
        _HOLD_IF_IT_FITS, {"p_account": hold.account_id, "p_amount": hold.amount_nano}
    )
    row = fitted.first()
    if row is None:
        available = await conn.scalar(_AVAILABLE, {"p_account": hold.account_id})
        return Placement(False, int(available or 0))
    invariant(row.held_nano <= row.balance_nano, f"hold {hold.request_id} overdrew its account")
    await conn.execute(_INSERT_HOLD, _hold_values(hold))
    return Placement(True, row.balance_nano - row.held_nano + hold.amount_nano)


async def _settle(conn: AsyncConnection, settlement: Settlement) -> bool:
    """Resolve the hold if still open; post the debit and write the usage record."""
    hold = settlement.hold
    claimed = await conn.execute(
        _CLAIM_OPEN_HOLD,
        {
            "p_id": hold.request_id,
            "p_state": settlement.hold_state,
            "p_resolved_ms": settlement.settled_ms,
        },
    )
    row = claimed.first()
    if row is None:
        return False
    invariant(
        (row.account_id, row.amount_nano) == (hold.account_id, hold.amount_nano),
        f"settlement of {hold.request_id} does not match its hold",
    )
    await conn.execute(
        _RELEASE_AND_DEBIT,
        {"p_account": hold.account_id, "p_held": hold.amount_nano, "p_cost": settlement.cost_nano},
    )
    if settlement.cost_nano > 0:
        await conn.execute(_INSERT_ENTRY, _debit_values(settlement))
    await conn.execute(_INSERT_USAGE, _usage_values(settlement))
    return True


def _hold_values(hold: Hold) -> dict[str, Any]:
    return {
        "id": hold.request_id,
        "account_id": hold.account_id,
        "key_id": hold.key_id,
        "model": hold.model,
        "stream": hold.stream,
        "prompt_price_nano": hold.rates.prompt_nano_per_mtok,
        "completion_price_nano": hold.rates.completion_nano_per_mtok,
        "prompt_tokens": hold.prompt_tokens,
        "completion_tokens": hold.completion_tokens,
        "amount_nano": hold.amount_nano,
        "state": "open",
        "created_ms": hold.created_ms,
        "expires_ms": hold.expires_ms,
    }


def _debit_values(settlement: Settlement) -> dict[str, Any]:
    return {
        "account_id": settlement.hold.account_id,
        "kind": "debit",
        "amount_nano": -settlement.cost_nano,
        "reference": settlement.hold.request_id,
        "memo": settlement.settled_by,
        "created_ms": settlement.settled_ms,
    }


def _usage_values(settlement: Settlement) -> dict[str, Any]:
    hold = settlement.hold
    return {
        "request_id": hold.request_id,
        "account_id": hold.account_id,
        "key_id": hold.key_id,
        "model": hold.model,
        "stream": hold.stream,
        "prompt_tokens": settlement.prompt_tokens,
        "completion_tokens": settlement.completion_tokens,
        "cost_nano": settlement.cost_nano,
        "held_nano": hold.amount_nano,
        "settled_by": settlement.settled_by,
        "status": settlement.status,
        "capped": settlement.capped,
        "started_ms": hold.created_ms,
        "settled_ms": settlement.settled_ms,
    }


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
