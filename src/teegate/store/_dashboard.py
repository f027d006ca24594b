"""What the dashboard keeps: logins, invites, browser sessions, credits posted from
payment events, and the account-scoped reads its pages show (ledger, usage by day)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.errors import StoreConflict, StoreNotFound
from teegate.store._accounts import Account, _append_entry, now_ms
from teegate.store._schema import (
    accounts,
    dashboard_sessions,
    ledger_entries,
    login_invites,
    logins,
    payment_events,
    usage_records,
)

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Login:
    account_id: int
    email: str
    password_hash: str | None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    kind: str
    """'credit' or 'debit' (a settled request's charge)."""
    amount_nano: int
    reference: str | None
    memo: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One UTC day's settled requests of one model."""

    day_ms: int
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int


class DashboardStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def account(self, account_id: int) -> Account:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        if row is None:
            raise StoreNotFound(f"no account with id {account_id}")
        return Account(row.id, row.name, row.balance_nano, row.created_ms)

    async def set_email(self, account_name: str, email: str) -> Login:
        """Give the account a login by this email (its password, if any, stays)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(select(accounts.c.id).where(accounts.c.name == account_name))
            ).first()
            if row is None:
                raise StoreNotFound(f"no account named '{account_name}'")
            try:
                changed = await conn.execute(
                    update(logins)
                    .where(logins.c.account_id == row.id)
                    .values(email=email, updated_ms=now_ms())
                )
                if changed.rowcount == 0:
                    await conn.execute(
                        insert(logins).values(
                            account_id=row.id, email=email, password_hash=None, updated_ms=now_ms()
                        )
                    )
            except IntegrityError as exc:
                raise StoreConflict(f"the email '{email}' belongs to another account") from exc
        found = await self.find_login(email)
        assert found is not None
        return found

    async def find_login(self, email: str) -> Login | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(logins).where(logins.c.email == email))).first()
        return None if row is None else Login(row.account_id, row.email, row.password_hash)

    async def login_of(self, account_name: str) -> Login | None:
        query = (
            select(logins)
            .join(accounts, accounts.c.id == logins.c.account_id)
            .where(accounts.c.name == account_name)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Login(row.account_id, row.email, row.password_hash)

    async def set_password_hash(self, account_id: int, password_hash: str) -> None:
        """A new password ends every session the account had."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(logins)
                .where(logins.c.account_id == account_id)
                .values(password_hash=password_hash, updated_ms=now_ms())
            )
            await conn.execute(
                delete(dashboard_sessions).where(dashboard_sessions.c.account_id == account_id)
            )

    async def add_invite(self, account_id: int, token_hash: str, expires_ms: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(login_invites).values(
                    token_hash=token_hash, account_id=account_id, expires_ms=expires_ms
                )
            )

    async def use_invite(self, token_hash: str) -> int | None:
        """The invite's account, once: the conditional UPDATE lets one caller win."""
        now = now_ms()
        async with self.engine.begin() as conn:
            used = await conn.execute(
                update(login_invites)
                .where(
                    login_invites.c.token_hash == token_hash,
                    login_invites.c.used_ms.is_(None),
                    login_invites.c.expires_ms > now,
                )
                .values(used_ms=now)
            )
            if used.rowcount != 1:
                return None
            account_id = await conn.scalar(
                select(login_invites.c.account_id).where(login_invites.c.token_hash == token_hash)
            )
        return None if account_id is None else int(account_id)

    async def add_session(self, token_hash: str, account_id: int, expires_ms: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(dashboard_sessions).values(
                    token_hash=token_hash,
                    account_id=account_id,
                    created_ms=now_ms(),
                    expires_ms=expires_ms,
                )
            )

    async def session_account(self, token_hash: str) -> int | None:
        async with self.engine.connect() as conn:
            account_id = await conn.scalar(
                select(dashboard_sessions.c.account_id).where(
                    dashboard_sessions.c.token_hash == token_hash,
                    dashboard_sessions.c.expires_ms > now_ms(),
                )
            )
        return None if account_id is None else int(account_id)

    async def drop_session(self, token_hash: str) -> None:
        """Sign out; expired sessions of anyone go with it."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(dashboard_sessions).where(
                    (dashboard_sessions.c.token_hash == token_hash)
                    | (dashboard_sessions.c.expires_ms <= now_ms())
                )
            )

    async def ledger(self, account_id: int, limit: int) -> list[LedgerEntry]:
        """Newest first."""
        query = (
            select(ledger_entries)
            .where(ledger_entries.c.account_id == account_id)
            .order_by(ledger_entries.c.id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
        return [LedgerEntry(r.kind, r.amount_nano, r.reference, r.memo, r.created_ms) for r in rows]

    async def usage_by_day(self, account_id: int, since_ms: int) -> list[UsageDay]:
        """Summed in the database: a month of heavy use is still a few rows."""
        day = (usage_records.c.started_ms // DAY_MS).label("day")
        c = usage_records.c
        query = (
            select(
                day,
                c.model,
                func.count().label("requests"),
                func.sum(c.prompt_tokens).label("prompt_tokens"),
                func.sum(c.completion_tokens).label("completion_tokens"),
                func.sum(c.cost_nano).label("cost_nano"),
            )
            .where(c.account_id == account_id, c.started_ms >= since_ms)
            .group_by(day, c.model)
            .order_by(day, c.model)
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
        return [
            UsageDay(
                int(r.day) * DAY_MS,
                r.model,
                int(r.requests),
                int(r.prompt_tokens),
                int(r.completion_tokens),
                int(r.cost_nano),
            )
            for r in rows
        ]

    async def credit_once(
        self, event_id: str, account_id: int, amount_nano: int, *, reference: str, memo: str
    ) -> bool:
        """Credit the account for a payment event, unless that event (or another
        with the same ledger `reference`) already did: the event's row and the credit
        commit together or not at all."""
        if amount_nano <= 0:
            raise ValueError("a credit must be positive")
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(payment_events).values(
                        event_id=event_id,
                        account_id=account_id,
                        amount_nano=amount_nano,
                        created_ms=now_ms(),
                    )
                )
                await _append_entry(
                    conn,
                    account_id,
                    kind="credit",
                    amount_nano=amount_nano,
                    memo=memo,
                    reference=reference,
                )
        except IntegrityError:
            return False
        return True
