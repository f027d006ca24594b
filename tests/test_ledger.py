"""The SQL ledger beyond its contract (test_ledger_contract.py), on real SQLite and
PostgreSQL: two replicas' writers, group commit, outages, and migrations that match the
schema exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import UsageQuery
from teegate.errors import ServiceUnavailable
from teegate.store import AccountStore, Ledger, create_engine, metadata, upgrade
from tests.support.billing import ledger_state
from tests.support.ledger import NOW_MS, a_hold, by_usage, funded


@pytest.fixture
async def ledger(engine: AsyncEngine) -> AsyncIterator[Ledger]:
    async with Ledger(engine).running() as running:
        yield running


# migrations ---------------------------------------------------------------------------


async def test_migrations_match_the_schema_exactly(engine: AsyncEngine) -> None:
    def diff(sync: object) -> list[object]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


# holds and settlement -----------------------------------------------------------------


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


# reads are scoped --------------------------------------------------------------------------


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
        await upgrade(engine, "0002")
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
