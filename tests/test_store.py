"""store/: migrations and AccountStore on a real SQLite file, and on PostgreSQL when
TEEGATE_TEST_POSTGRES_URL is set (each PostgreSQL test gets a fresh schema)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.store import (
    Account,
    AccountStore,
    ApiKey,
    KeyOwner,
    StoreConflict,
    StoreNotFound,
    create_engine,
    is_current,
    now_ms,
    upgrade,
)

POSTGRES_URL = os.environ.get("TEEGATE_TEST_POSTGRES_URL")
TABLES = {
    "accounts",
    "api_keys",
    "budgets",
    "ledger_entries",
    "holds",
    "usage_records",
    "transparency_leaves",
    "receipts",
    "receipt_keys",
    "alembic_version",
    # the dashboard (migration 0007_dashboard)
    "logins",
    "login_invites",
    "dashboard_sessions",
    "payment_events",
}


def _postgres_engine(url: str, schema: str) -> AsyncEngine:
    """teegate's own engine, with every connection confined to `schema`."""
    engine = create_engine(url)

    @event.listens_for(engine.sync_engine, "connect", insert=True)
    def _search_path(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET SESSION search_path TO "{schema}"')
        cursor.close()
        dbapi_connection.autocommit = autocommit

    return engine


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                POSTGRES_URL is None,
                reason="set TEEGATE_TEST_POSTGRES_URL to run the store tests on PostgreSQL",
            ),
        ),
    ]
)
async def empty_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An engine on a database with no tables yet."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'teegate.db'}")
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    assert POSTGRES_URL is not None
    schema = f"test_store_{secrets.token_hex(6)}"
    engine = _postgres_engine(POSTGRES_URL, schema)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


@pytest.fixture
async def store(empty_engine: AsyncEngine) -> AccountStore:
    await upgrade(empty_engine)
    return AccountStore(empty_engine)


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


# migrations ---------------------------------------------------------------------


async def test_upgrade_creates_the_schema_and_is_current(empty_engine: AsyncEngine) -> None:
    assert await is_current(empty_engine) is False
    assert await table_names(empty_engine) == set()
    await upgrade(empty_engine)
    assert await is_current(empty_engine) is True
    assert await table_names(empty_engine) == TABLES


async def test_upgrade_is_idempotent(empty_engine: AsyncEngine) -> None:
    await upgrade(empty_engine)
    store = AccountStore(empty_engine)
    await store.create_account("acme")
    await store.credit("acme", 5)
    await upgrade(empty_engine)
    await upgrade(empty_engine)
    assert await is_current(empty_engine) is True
    assert [(a.name, a.balance_nano) for a in await store.list_accounts()] == [("acme", 5)]


async def test_sqlite_file_and_directory_are_created(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "teegate.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(engine)
        assert path.is_file()
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
        assert (mode, foreign_keys) == ("wal", 1)
    finally:
        await engine.dispose()


# accounts -----------------------------------------------------------------------


async def test_create_get_and_list_accounts(store: AccountStore) -> None:
    before = now_ms()
    acme = await store.create_account("acme")
    beta = await store.create_account("beta")
    after = now_ms()
    assert isinstance(acme, Account)
    assert (acme.name, acme.balance_nano) == ("acme", 0)
    assert before <= acme.created_ms <= after
    assert beta.id != acme.id
    assert await store.get_account("acme") == acme
    assert await store.list_accounts() == [acme, beta]


async def test_duplicate_account_name_is_a_conflict(store: AccountStore) -> None:
    await store.create_account("acme")
    with pytest.raises(StoreConflict, match="'acme' already exists"):
        await store.create_account("acme")
    await store.create_account("acme-2")  # the store is still usable
    assert [a.name for a in await store.list_accounts()] == ["acme", "acme-2"]


async def test_unknown_account(store: AccountStore) -> None:
    with pytest.raises(StoreNotFound, match="nobody"):
        await store.get_account("nobody")
    with pytest.raises(StoreNotFound):
        await store.credit("nobody", 1)
    assert await store.list_accounts() == []


# credit and the ledger ----------------------------------------------------------------


async def test_credit_moves_balance_and_ledger_together(store: AccountStore) -> None:
    acme = await store.create_account("acme")
    other = await store.create_account("other")
    amounts = [1, 1_850_000, 5 * 10**12, 2**40]  # past 32 bits: BigInteger columns
    balance = 0
    for amount in amounts:
        balance += amount
        updated = await store.credit("acme", amount, memo="top-up")
        assert updated.balance_nano == balance
        assert await store.ledger_sum(acme.id) == balance
    assert (await store.get_account("acme")).balance_nano == sum(amounts)
    assert await store.ledger_sum(other.id) == 0
    assert (await store.get_account("other")).balance_nano == 0


@pytest.mark.parametrize("amount", [0, -1, -(10**9)])
async def test_credit_must_be_positive(store: AccountStore, amount: int) -> None:
    acme = await store.create_account("acme")
    with pytest.raises(ValueError, match="positive"):
        await store.credit("acme", amount)
    assert await store.ledger_sum(acme.id) == 0
    assert (await store.get_account("acme")).balance_nano == 0


async def test_concurrent_credits_all_land(store: AccountStore) -> None:
    acme = await store.create_account("acme")
    amounts = [10**9 + i for i in range(12)]
    await asyncio.gather(*(store.credit("acme", a) for a in amounts))
    assert (await store.get_account("acme")).balance_nano == sum(amounts)
    assert await store.ledger_sum(acme.id) == sum(amounts)


async def test_ledger_sum_of_unknown_account_is_zero(store: AccountStore) -> None:
    assert await store.ledger_sum(123456) == 0


# keys -------------------------------------------------------------------------------


def hash_of(key_id: str) -> str:
    return (key_id * 8)[:64].ljust(64, "0")


async def add_key(
    store: AccountStore, key_id: str, account: str = "acme", *, rpm: int | None = None
) -> ApiKey:
    return await store.create_key(
        key_id=key_id,
        account_name=account,
        key_hash=hash_of(key_id),
        hint=f"vgpu_sk_...{key_id[-4:]}",
        name=f"label {key_id}",
        rpm=rpm,
    )


async def test_create_and_list_keys(store: AccountStore) -> None:
    acme = await store.create_account("acme")
    await store.create_account("beta")
    first = await add_key(store, "key_0001", rpm=60)
    second = await add_key(store, "key_0002")
    third = await add_key(store, "key_0003", "beta", rpm=5)
    assert first == ApiKey(
        "key_0001", acme.id, "acme", "label key_0001", "vgpu_sk_...0001", 60, first.created_ms, None
    )
    assert first.active
    assert await store.list_keys() == [first, second, third]
    assert await store.list_keys("acme") == [first, second]
    assert await store.list_keys("beta") == [third]
    assert await store.list_keys("nobody") == []
    assert await store.get_key("key_0003") == third


async def test_key_for_unknown_account(store: AccountStore) -> None:
    with pytest.raises(StoreNotFound):
        await add_key(store, "key_0001", "nobody")
    assert await store.list_keys() == []


async def test_unknown_key(store: AccountStore) -> None:
    with pytest.raises(StoreNotFound, match="key_nope"):
        await store.get_key("key_nope")
    with pytest.raises(StoreNotFound):
        await store.revoke_key("key_nope")
    assert await store.find_key_owner("f" * 64) is None


async def test_find_key_owner(store: AccountStore) -> None:
    acme = await store.create_account("acme")
    await add_key(store, "key_0001", rpm=7)
    owner = await store.find_key_owner(hash_of("key_0001"))
    assert owner == KeyOwner("key_0001", hash_of("key_0001"), acme.id, 7, revoked=False)


async def test_revoke_key(store: AccountStore) -> None:
    await store.create_account("acme")
    key = await add_key(store, "key_0001")
    keep = await add_key(store, "key_0002")
    before = now_ms()
    revoked = await store.revoke_key("key_0001")
    assert revoked.revoked_ms is not None
    assert before <= revoked.revoked_ms <= now_ms()
    assert not revoked.active
    assert (revoked.id, revoked.name, revoked.account_id) == (key.id, key.name, key.account_id)
    owner = await store.find_key_owner(hash_of("key_0001"))
    assert owner is not None
    assert owner.revoked
    assert (await store.get_key("key_0002")) == keep

    again = await store.revoke_key("key_0001")  # idempotent: the first revocation stands
    assert again.revoked_ms == revoked.revoked_ms
    assert [k.active for k in await store.list_keys()] == [False, True]


async def test_a_key_policy_is_stored_updated_and_read_with_the_key(store: AccountStore) -> None:
    await store.create_account("acme")
    stored = '{"models": ["deepseek-ai/"], "attestation": null}'
    key = await store.create_key(
        key_id="key_0001",
        account_name="acme",
        key_hash=hash_of("key_0001"),
        hint="vgpu_sk_...0001",
        name="",
        rpm=None,
        policy=stored,
    )
    assert key.policy == stored
    assert await store.get_key("key_0001") == key
    owner = await store.find_key_owner(hash_of("key_0001"))
    assert owner is not None
    assert owner.policy == stored
    updated = await store.update_key("key_0001", rpm=9, policy=None)
    assert (updated.rpm, updated.policy) == (9, None)
    owner = await store.find_key_owner(hash_of("key_0001"))
    assert owner is not None
    assert (owner.rpm, owner.policy) == (9, None)
    with pytest.raises(StoreNotFound):
        await store.update_key("key_nope", rpm=None, policy=None)
