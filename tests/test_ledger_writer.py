"""The ledger writer under the group committer: its own SQLite connections and threads,
its own PostgreSQL connection, one-by-one retries, raw driver errors mapped to 503,
and the writes' guard against a settlement that does not match its hold."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import Placement
from teegate.errors import ServiceUnavailable
from teegate.invariants import InvariantViolation
from teegate.store import Ledger, create_engine, is_outage, is_retryable, upgrade
from teegate.store.sqlite import CHECKPOINT_THREAD, SQLITE_THREAD, SqliteWriter
from tests.support.billing import ledger_state
from tests.support.ledger import Unopenable, a_hold, by_usage, funded


def ledger_threads() -> list[threading.Thread]:
    names = (SQLITE_THREAD, CHECKPOINT_THREAD)
    return [t for t in threading.enumerate() if t.name.startswith(names)]


async def test_no_sqlite_writer_thread_outlives_the_ledger(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    try:
        await upgrade(engine)
        account = await funded(engine, "acme", 10**9)
        before = ledger_threads()
        async with Ledger(engine).running() as ledger:
            assert (await ledger.place_hold(a_hold(account, "req_1"))).placed
            assert (await ledger.place_hold(a_hold(account, "req_2"))).placed
            started = [t.name for t in ledger_threads() if t not in before]
            assert started == [CHECKPOINT_THREAD]  # batches ran on the loop: the lock was free
        assert ledger_threads() == before
        # its connections are closed too: nothing holds the file open or a transaction
        with sqlite3.connect(tmp_path / "ledger.db", timeout=0) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
    finally:
        await engine.dispose()


async def test_a_ledger_that_only_reads_starts_no_thread(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    try:
        await upgrade(engine)
        before = ledger_threads()
        async with Ledger(engine).running() as ledger:
            assert await ledger.balance(1) is None
            assert ledger_threads() == before
    finally:
        await engine.dispose()


def test_an_in_memory_sqlite_ledger_is_refused() -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    with pytest.raises(ValueError, match="SQLite file"):
        Ledger(engine)


async def test_a_batch_with_a_failing_write_retries_the_others_alone(engine: AsyncEngine) -> None:
    account = await funded(engine, "acme", 10**12)
    async with Ledger(engine).running() as ledger:
        first = a_hold(account, "req_first")
        await ledger.place_hold(first)
        assert ledger.writer.transactions == 1
        holds = [a_hold(account, f"req_{i}") for i in range(10)]
        results = await asyncio.gather(
            *(ledger.place_hold(h) for h in holds),
            ledger.settle(by_usage(first, 10, 10)),
            ledger.place_hold(a_hold(account, "req_first")),  # primary key clash: a bug
            return_exceptions=True,
        )
        # one batch failed; its 11 good writes committed one transaction each
        assert ledger.writer.transactions == 1 + 11
        assert all(isinstance(r, Placement) and r.placed for r in results[:10])
        assert results[10] is True
        error = results[11]
        assert isinstance(error, sqlite3.IntegrityError | asyncpg.UniqueViolationError)
    state = await ledger_state(engine, account)
    state.check()
    assert (state.open_holds, state.usage_records) == (10, 1)


async def test_a_mismatched_settlement_leaves_no_write_lock_on_sqlite(tmp_path: Path) -> None:
    """The invariant fails inside the writer's transaction: it rolls back, and the
    writer's connection, still open, does not keep the write lock."""
    path = tmp_path / "ledger.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(engine)
        account = await funded(engine, "acme", 10**9)
        hold = a_hold(account, "req_1")
        async with Ledger(engine).running() as ledger:
            await ledger.place_hold(hold)
            other = a_hold(account, "req_1", completion=7)  # same id, another amount
            with pytest.raises(InvariantViolation, match="does not match its hold"):
                await ledger.settle(by_usage(other, 1, 1))
            with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as c:
                c.execute("BEGIN IMMEDIATE")
                c.execute("ROLLBACK")
            assert await ledger.settle(by_usage(hold, 1, 1)) is True
        (await ledger_state(engine, account)).check()
    finally:
        await engine.dispose()


async def test_a_refused_hold_reports_what_was_available(engine: AsyncEngine) -> None:
    amount = a_hold(1, "probe").amount_nano
    account = await funded(engine, "acme", 2 * amount - 1)
    async with Ledger(engine).running() as ledger:
        placements = await asyncio.gather(
            *(ledger.place_hold(a_hold(account, f"req_{i}")) for i in range(3))
        )
        assert [(p.placed, p.available_nano) for p in placements] == [
            (True, 2 * amount - 1),
            (False, amount - 1),
            (False, amount - 1),
        ]
        assert ledger.writer.transactions == 1


async def test_the_postgres_writer_reconnects_after_its_connection_is_killed(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: a SQLite connection cannot be killed from outside")
    account = await funded(engine, "acme", 10**12)
    async with Ledger(engine).running() as ledger:
        assert (await ledger.place_hold(a_hold(account, "req_1"))).placed
        async with engine.connect() as conn:  # what a server restart does to it
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert killed >= 1
        await asyncio.sleep(0.2)  # the writer's connection sees its socket close
        assert (await ledger.place_hold(a_hold(account, "req_2"))).placed  # no 503
    # the writer gave its connection back (checkedout is QueuePool's)
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    (await ledger_state(engine, account)).check()


async def test_the_writer_s_raw_driver_errors_map_like_sqlalchemy_s() -> None:
    assert is_outage(sqlite3.OperationalError("database is locked"))
    assert is_outage(asyncpg.ConnectionDoesNotExistError("connection was closed"))
    assert is_outage(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert is_outage(asyncpg.InterfaceError("connection is closed"))
    assert not is_outage(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not is_outage(asyncpg.UniqueViolationError("duplicate key"))
    assert is_retryable(asyncpg.DeadlockDetectedError("deadlock detected"))
    assert is_retryable(asyncpg.SerializationError("could not serialize"))
    assert not is_outage(asyncpg.DeadlockDetectedError("deadlock detected"))
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("locked"))
    assert is_outage(wrapped)


async def test_an_unopenable_sqlite_file_is_503_and_the_writer_recovers(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    try:
        await upgrade(engine)
        account = await funded(engine, "acme", 10**9)
        connect = Unopenable()
        writer = SqliteWriter(engine, connect=connect)
        async with Ledger(engine, writer=writer).running() as ledger:
            with (
                connect.fails(),
                pytest.raises(ServiceUnavailable, match="billing is unavailable"),
            ):
                await ledger.place_hold(a_hold(account, "req_1"))
            assert (await ledger.place_hold(a_hold(account, "req_2"))).placed
        state = await ledger_state(engine, account)
        assert (state.holds, state.open_holds) == (1, 1)
    finally:
        await engine.dispose()
