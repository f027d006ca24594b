"""store/_ledger.py on real SQLite and PostgreSQL: holds, settlement, reaping, group
commit, outages, and migrations that match the schema exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import (
    Billing,
    Hold,
    Rates,
    Settlement,
    UsageQuery,
    cost_nano,
    expired_settlement,
    settlement_for,
)
from teegate.errors import ServiceUnavailable
from teegate.store import AccountStore, Ledger, create_engine, upgrade
from teegate.store._migrate import _config
from teegate.store._schema import metadata
from tests.support.billing import ledger_state

RATES = Rates(740_000_000, 3_237_500_000)  # R1's sample prices x 1.85
NOW_MS = 1_800_000_000_000


@pytest.fixture
async def ledger(engine: AsyncEngine) -> AsyncIterator[Ledger]:
    async with Ledger(engine).running() as running:
        yield running


async def funded(engine: AsyncEngine, name: str, nano: int) -> int:
    store = AccountStore(engine)
    account = await store.create_account(name)
    if nano:
        await store.credit(name, nano)
    return account.id


def a_hold(
    account_id: int,
    request_id: str,
    *,
    completion: int = 100,
    created: int = NOW_MS,
    ttl_ms: int = 60_000,
) -> Hold:
    prompt = 50
    return Hold(
        request_id=request_id, account_id=account_id, key_id="key_1", model="m/x-TEE",
        stream=False, rates=RATES, prompt_tokens=prompt, completion_tokens=completion,
        amount_nano=cost_nano(prompt, completion, RATES), created_ms=created,
        expires_ms=created + ttl_ms,
    )  # fmt: skip


class Usage:
    def __init__(self, prompt: int, completion: int) -> None:
        self.prompt_tokens = prompt
        self.completion_tokens = completion


def by_usage(hold: Hold, prompt: int, completion: int) -> Settlement:
    return settlement_for(
        hold, status="ok", usage=Usage(prompt, completion), output_bytes=0, now_ms=NOW_MS + 5
    )


# migrations ---------------------------------------------------------------------------


async def test_migrations_match_the_schema_exactly(engine: AsyncEngine) -> None:
    def diff(sync: object) -> list[object]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


# holds and settlement -----------------------------------------------------------------


async def test_hold_then_settle_posts_the_cost_and_releases_the_rest(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = await funded(engine, "acme", 10**9)
    hold = a_hold(account, "req_1")
    placement = await ledger.place_hold(hold)
    assert (placement.placed, placement.available_nano) == (True, 10**9)
    balance = await ledger.balance(account)
    assert balance is not None
    assert (balance.balance_nano, balance.held_nano) == (10**9, hold.amount_nano)

    settlement = by_usage(hold, 40, 30)
    assert await ledger.settle(settlement) is True
    balance = await ledger.balance(account)
    assert balance is not None
    assert (balance.balance_nano, balance.held_nano) == (10**9 - settlement.cost_nano, 0)
    [record] = await ledger.usage(UsageQuery(limit=10, account_id=account))
    assert (record.request_id, record.prompt_tokens, record.completion_tokens) == ("req_1", 40, 30)
    assert (record.cost_nano, record.held_nano, record.settled_by) == (
        settlement.cost_nano,
        hold.amount_nano,
        "usage",
    )
    assert await ledger.generation(account, "req_1") == record
    (await ledger_state(engine, account)).check()


async def test_settlement_is_exactly_once(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await funded(engine, "acme", 10**9)
    hold = a_hold(account, "req_1")
    await ledger.place_hold(hold)
    first, again, expired = (
        by_usage(hold, 40, 30),
        by_usage(hold, 50, 100),
        expired_settlement(hold, NOW_MS + 10**9),
    )
    results = await asyncio.gather(ledger.settle(first), ledger.settle(again),
                                   ledger.settle(expired))  # fmt: skip
    assert sorted(results) == [False, False, True]
    state = await ledger_state(engine, account)
    state.check()
    assert state.usage_records == 1 and state.open_holds == 0
    assert state.debits_nano in {s.cost_nano for s in (first, again, expired)}


async def test_a_hold_that_does_not_fit_is_refused_and_changes_nothing(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    hold_amount = a_hold(1, "probe").amount_nano
    account = await funded(engine, "acme", hold_amount - 1)
    placement = await ledger.place_hold(a_hold(account, "req_1"))
    assert (placement.placed, placement.available_nano) == (False, hold_amount - 1)
    state = await ledger_state(engine, account)
    assert (state.held_nano, state.holds) == (0, 0)


async def test_zero_cost_settlement_voids_without_an_entry(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = await funded(engine, "acme", 10**9)
    hold = a_hold(account, "req_1")
    await ledger.place_hold(hold)
    void = settlement_for(hold, status="upstream_error", usage=None, output_bytes=0, now_ms=NOW_MS)
    assert (void.cost_nano, void.settled_by, void.hold_state) == (0, "void", "voided")
    assert await ledger.settle(void) is True
    state = await ledger_state(engine, account)
    state.check()
    assert (state.balance_nano, state.debits_nano, state.usage_records) == (10**9, 0, 1)


# concurrency and group commit ---------------------------------------------------------


async def test_concurrent_holds_never_overdraw_across_two_writers(url: str) -> None:
    """Two ledgers on two engines (two replicas), 300 holds racing for room for 37."""
    engines = [create_engine(url), create_engine(url)]
    try:
        await upgrade(engines[0])
        amount = a_hold(1, "probe").amount_nano
        account = await funded(engines[0], "acme", 37 * amount + amount - 1)
        async with Ledger(engines[0]).running() as one, Ledger(engines[1]).running() as two:
            placements = await asyncio.gather(*(
                (one, two)[i % 2].place_hold(a_hold(account, f"req_{i}")) for i in range(300)
            ))  # fmt: skip
            assert sum(p.placed for p in placements) == 37
            assert one.writer.transactions + two.writer.transactions < 300 // 4  # batched
            for i, placement in enumerate(placements):
                if placement.placed:
                    await (one, two)[i % 2].settle(by_usage(a_hold(account, f"req_{i}"), 10, 10))
        state = await ledger_state(engines[0], account)
        state.check()
        assert (state.usage_records, state.open_holds, state.held_nano) == (37, 0, 0)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_one_failing_write_does_not_fail_its_batch(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    account = await funded(engine, "acme", 10**12)
    await ledger.place_hold(a_hold(account, "req_dup"))
    results = await asyncio.gather(
        *(ledger.place_hold(a_hold(account, f"req_{i}")) for i in range(20)),
        ledger.place_hold(a_hold(account, "req_dup")),  # primary key clash: a bug, not a 503
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and not isinstance(failures[0], ServiceUnavailable)
    assert all(not isinstance(r, BaseException) and r.placed for r in results[:20])
    state = await ledger_state(engine, account)
    state.check()
    assert state.open_holds == 21


# the reaper ------------------------------------------------------------------------------


async def test_reaper_posts_expired_holds_in_full_once(engine: AsyncEngine, ledger: Ledger) -> None:
    account = await funded(engine, "acme", 10**10)
    stale = a_hold(account, "req_stale", created=NOW_MS - 120_000)  # expired a minute ago
    old = a_hold(account, "req_old", created=NOW_MS - 20_000, ttl_ms=3_600_000)  # > TTL now
    fresh = a_hold(account, "req_fresh", created=NOW_MS - 1_000)
    for hold in (stale, old, fresh):
        await ledger.place_hold(hold)
    billing = Billing(ledger, hold_ttl_s=10, reaper_interval_s=1, clock=lambda: NOW_MS)
    assert await billing.reaper.reap_once() == 2
    assert await billing.reaper.reap_once() == 0
    state = await ledger_state(engine, account)
    state.check()
    assert state.debits_nano == stale.amount_nano + old.amount_nano
    assert [h.request_id for h in await ledger.open_holds(account)] == ["req_fresh"]
    record = await ledger.generation(account, "req_stale")
    assert record is not None
    assert (record.settled_by, record.status, record.cost_nano) == (
        "expired-hold",
        "expired",
        stale.amount_nano,
    )
    assert await ledger.settle(by_usage(stale, 1, 1)) is False  # too late: the pre-charge stands


# reads are scoped --------------------------------------------------------------------------


async def test_usage_reads_are_scoped_and_filtered(engine: AsyncEngine, ledger: Ledger) -> None:
    acme, beta = await funded(engine, "acme", 10**10), await funded(engine, "beta", 10**10)
    for account, request_id, created in [(acme, "a1", NOW_MS), (acme, "a2", NOW_MS + 10),
                                         (beta, "b1", NOW_MS + 5)]:  # fmt: skip
        hold = a_hold(account, request_id, created=created)
        await ledger.place_hold(hold)
        await ledger.settle(replace(by_usage(hold, 1, 1), settled_ms=created + 1))
    newest_first = await ledger.usage(UsageQuery(limit=10, account_id=acme))
    assert [r.request_id for r in newest_first] == ["a2", "a1"]
    assert [r.request_id for r in await ledger.usage(UsageQuery(limit=10, account_name="beta"))
            ] == ["b1"]  # fmt: skip
    since = await ledger.usage(UsageQuery(limit=10, since_ms=NOW_MS + 5))
    assert [r.request_id for r in since] == ["a2", "b1"]
    assert await ledger.generation(beta, "a1") is None  # another account's id: not found


# outages -----------------------------------------------------------------------------------


async def test_an_unreachable_database_is_service_unavailable() -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")
    try:
        async with Ledger(engine).running() as ledger:
            with pytest.raises(ServiceUnavailable, match="billing is unavailable"):
                await ledger.place_hold(a_hold(1, "req_1"))
            with pytest.raises(ServiceUnavailable):
                await ledger.balance(1)
            with pytest.raises(ServiceUnavailable):
                await AccountStore(engine).find_key_owner("0" * 64)
    finally:
        await engine.dispose()


async def test_writes_outside_the_running_block_are_refused(engine: AsyncEngine) -> None:
    ledger = Ledger(engine)
    with pytest.raises(ServiceUnavailable):
        await ledger.place_hold(a_hold(1, "req_1"))


def test_db_upgrade_command_migrates_either_engine(url: str) -> None:
    from typer.testing import CliRunner

    from teegate.cli import app
    from teegate.store import is_current

    env = {"TEEGATE_DATABASE_URL": url, "TEEGATE_ENVIRONMENT": "development"}
    result = CliRunner().invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output

    async def current() -> bool:
        engine = create_engine(url)
        try:
            return await is_current(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(current())


async def test_the_lean_indexes_migration_keeps_the_books(url: str) -> None:
    """0003 (fewer pages per commit) on a ledger written under 0002: every hold and
    usage record is still there, and the reaper still finds the open holds."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.upgrade(_config(sync), "0002"))
        account = await funded(engine, "acme", 10**9)
        async with Ledger(engine).running() as ledger:
            settled, left_open = a_hold(account, "req_1"), a_hold(account, "req_2", ttl_ms=10)
            for hold in (settled, left_open):
                assert (await ledger.place_hold(hold)).placed
            assert await ledger.settle(by_usage(settled, 40, 30))
        await upgrade(engine)
        ledger = Ledger(engine)
        assert [h.request_id for h in await ledger.expired_holds(NOW_MS + 10, 60_000, 10)] == [
            "req_2"
        ]
        [record] = await ledger.usage(UsageQuery(limit=10, account_id=account))
        assert (record.request_id, record.completion_tokens) == ("req_1", 30)
        (await ledger_state(engine, account)).check()
        if engine.dialect.name == "sqlite":
            async with engine.connect() as conn:
                usage_sql = await conn.scalar(
                    text("SELECT sql FROM sqlite_master WHERE name = 'usage_records'")
                )
            assert "WITHOUT ROWID" in usage_sql
    finally:
        await engine.dispose()
