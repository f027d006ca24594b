"""The dashboard's tables on SQLite and PostgreSQL: a payment event posts credit once
(also when its deliveries race), an invite works once, sessions end."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from teegate import console
from teegate.store import AccountStore, DashboardStore

CENT = 10_000_000


async def funded(engine: AsyncEngine) -> tuple[DashboardStore, int]:
    account = await AccountStore(engine).create_account("acme")
    return DashboardStore(engine), account.id


async def test_an_event_posts_once_and_a_session_reference_once(engine: AsyncEngine) -> None:
    store, account = await funded(engine)
    assert await store.credit_once("evt_1", account, 500 * CENT, reference="cs:1", memo="top-up")
    assert not await store.credit_once("evt_1", account, 500 * CENT, reference="cs:1", memo="x")
    assert not await store.credit_once("evt_2", account, 500 * CENT, reference="cs:1", memo="x")
    assert (await store.account(account)).balance_nano == 500 * CENT
    assert [e.kind for e in await store.ledger(account, 10)] == ["credit"]


async def test_racing_deliveries_of_one_event_post_once(engine: AsyncEngine) -> None:
    store, account = await funded(engine)
    posted = await asyncio.gather(
        *(
            store.credit_once("evt_race", account, 100 * CENT, reference="cs:r", memo="top-up")
            for _ in range(8)
        )
    )
    assert sorted(posted) == [False] * 7 + [True]
    assert (await store.account(account)).balance_nano == 100 * CENT
    assert await AccountStore(engine).ledger_sum(account) == 100 * CENT


async def test_an_invite_works_once(engine: AsyncEngine) -> None:
    store, account = await funded(engine)
    await store.set_email("acme", "owner@acme.test")
    token = await console.invite(store, account, ttl_s=60)
    used = await asyncio.gather(*(store.use_invite(console.token_hash(token)) for _ in range(4)))
    assert sorted(used, key=str) == [account, None, None, None]
    expired = await console.invite(store, account, ttl_s=0.001)
    await asyncio.sleep(0.01)
    assert await store.use_invite(console.token_hash(expired)) is None


async def test_a_new_password_ends_the_sessions(engine: AsyncEngine) -> None:
    store, account = await funded(engine)
    await store.set_email("acme", "owner@acme.test")
    await store.add_session("h" * 64, account, expires_ms=2**62)
    assert await store.session_account("h" * 64) == account
    await store.set_password_hash(account, "$argon2id$...")
    assert await store.session_account("h" * 64) is None
