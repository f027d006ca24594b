"""Accounts, their API keys and credits: the only SQL the auth and admin paths use."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from teegate.errors import StoreConflict, StoreNotFound
from teegate.store._outage import outage_as_unavailable
from teegate.store._schema import accounts, api_keys, budgets, ledger_entries

KEY_LOOKUP_BATCH = 500
"""Key hashes per IN list: well under every engine's limit on bound parameters."""


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    balance_nano: int
    created_ms: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: int
    account_name: str
    name: str
    hint: str
    rpm: int | None
    created_ms: int
    revoked_ms: int | None
    policy: str | None = None
    """apikeys.KeyPolicy as stored (JSON), None for none."""

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """What a request's key resolves to; the hash is kept for a constant-time recheck."""

    key_id: str
    key_hash: str
    account_id: int
    rpm: int | None
    revoked: bool
    policy: str | None = None
    budgeted: bool = False
    """The key or its account has a spend budget: its holds must move it."""


_HAS_BUDGET = exists().where(
    budgets.c.account_id == api_keys.c.account_id, budgets.c.key_id.in_(["", api_keys.c.id])
)
"""Whether a key's holds are budgeted: read with the key, so a request asks nothing more."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class AccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create_account(self, name: str) -> Account:
        created = now_ms()
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    insert(accounts).values(name=name, balance_nano=0, created_ms=created)
                )
        except IntegrityError as exc:
            raise StoreConflict(f"account '{name}' already exists") from exc
        key = result.inserted_primary_key
        assert key is not None
        return Account(int(key[0]), name, 0, created)

    async def get_account(self, name: str) -> Account:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
        if row is None:
            raise StoreNotFound(f"no account named '{name}'")
        return Account(row.id, row.name, row.balance_nano, row.created_ms)

    async def list_accounts(self) -> list[Account]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(accounts).order_by(accounts.c.id))
        return [Account(r.id, r.name, r.balance_nano, r.created_ms) for r in rows]

    async def credit(self, name: str, amount_nano: int, *, memo: str = "credit") -> Account:
        """Add credit as a ledger entry; the balance is the sum of entries."""
        if amount_nano <= 0:
            raise ValueError("a credit must be positive")
        account = await self.get_account(name)
        async with self.engine.begin() as conn:
            await _append_entry(conn, account.id, kind="credit", amount_nano=amount_nano, memo=memo)
        return await self.get_account(name)

    async def create_key(
        self,
        *,
        key_id: str,
        account_name: str,
        key_hash: str,
        hint: str,
        name: str,
        rpm: int | None,
        policy: str | None = None,
    ) -> ApiKey:
        account = await self.get_account(account_name)
        created = now_ms()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key_id,
                    account_id=account.id,
                    name=name,
                    key_hash=key_hash,
                    hint=hint,
                    rpm=rpm,
                    created_ms=created,
                    policy=policy,
                )
            )
        return ApiKey(key_id, account.id, account.name, name, hint, rpm, created, None, policy)

    async def update_key(self, key_id: str, *, rpm: int | None, policy: str | None) -> ApiKey:
        """Set a key's limit and policy (both as given: the caller merges)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(rpm=rpm, policy=policy)
            )
        if result.rowcount == 0:
            raise StoreNotFound(f"no key with id '{key_id}'")
        return await self.get_key(key_id)

    async def list_keys(self, account_name: str | None = None) -> list[ApiKey]:
        query = (
            select(api_keys, accounts.c.name.label("account_name"))
            .join(accounts, accounts.c.id == api_keys.c.account_id)
            .order_by(api_keys.c.created_ms, api_keys.c.id)
        )
        if account_name is not None:
            query = query.where(accounts.c.name == account_name)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
        return [
            ApiKey(
                r.id,
                r.account_id,
                r.account_name,
                r.name,
                r.hint,
                r.rpm,
                r.created_ms,
                r.revoked_ms,
                r.policy,
            )
            for r in rows
        ]

    async def get_key(self, key_id: str) -> ApiKey:
        for key in await self.list_keys():
            if key.id == key_id:
                return key
        raise StoreNotFound(f"no key with id '{key_id}'")

    async def revoke_key(self, key_id: str) -> ApiKey:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_ms.is_(None))
                .values(revoked_ms=now_ms())
            )
        if result.rowcount == 0:
            await self.get_key(key_id)  # raises StoreNotFound for an unknown id
        return await self.get_key(key_id)

    async def find_key_owner(self, key_hash: str) -> KeyOwner | None:
        """On the request path: an unreachable database answers 503, not 500."""
        return (await self.find_key_owners([key_hash])).get(key_hash)

    async def find_key_owners(self, key_hashes: Sequence[str]) -> dict[str, KeyOwner]:
        """The owners of many keys in one query per KEY_LOOKUP_BATCH (the auth cache's refresh)."""
        owners: dict[str, KeyOwner] = {}
        async with outage_as_unavailable(), self.engine.connect() as conn:
            for start in range(0, len(key_hashes), KEY_LOOKUP_BATCH):
                batch = key_hashes[start : start + KEY_LOOKUP_BATCH]
                rows = await conn.execute(
                    select(
                        api_keys.c.id,
                        api_keys.c.key_hash,
                        api_keys.c.account_id,
                        api_keys.c.rpm,
                        api_keys.c.revoked_ms,
                        api_keys.c.policy,
                        _HAS_BUDGET.label("budgeted"),
                    ).where(api_keys.c.key_hash.in_(batch))
                )
                for row in rows:
                    owners[row.key_hash] = KeyOwner(
                        row.id,
                        row.key_hash,
                        row.account_id,
                        row.rpm,
                        row.revoked_ms is not None,
                        row.policy,
                        bool(row.budgeted),
                    )
        return owners

    async def set_budget(
        self, account_name: str, key_id: str | None, period: str, limit_nano: int | None
    ) -> None:
        """Set (or with None, drop) a key's budget, or the account's (key_id None). What
        is already spent and held against it stays: only its limit changes."""
        account = await self.get_account(account_name)
        owner = budgets.c.account_id == account.id, budgets.c.key_id == (key_id or "")
        async with self.engine.begin() as conn:
            if limit_nano is None:
                await conn.execute(delete(budgets).where(*owner, budgets.c.period == period))
                return
            changed = await conn.execute(
                update(budgets)
                .where(*owner, budgets.c.period == period)
                .values(limit_nano=limit_nano)
            )
            if changed.rowcount == 0:
                await conn.execute(
                    insert(budgets).values(
                        account_id=account.id,
                        key_id=key_id or "",
                        period=period,
                        limit_nano=limit_nano,
                    )
                )

    async def ledger_sum(self, account_id: int) -> int:
        async with self.engine.connect() as conn:
            total = await conn.scalar(
                select(func.coalesce(func.sum(ledger_entries.c.amount_nano), 0)).where(
                    ledger_entries.c.account_id == account_id
                )
            )
        return int(total or 0)


async def _append_entry(
    conn: AsyncConnection,
    account_id: int,
    *,
    kind: str,
    amount_nano: int,
    memo: str,
    reference: str | None = None,
) -> None:
    """An entry and the balance it changes move together, in one transaction."""
    await conn.execute(
        insert(ledger_entries).values(
            account_id=account_id,
            kind=kind,
            amount_nano=amount_nano,
            reference=reference,
            memo=memo,
            created_ms=now_ms(),
        )
    )
    await conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(balance_nano=accounts.c.balance_nano + amount_nano)
    )
