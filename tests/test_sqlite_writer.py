"""The SQLite ledger writer on real files: batches on the event loop unless another
connection holds the write lock, and checkpoints on the checkpointer's thread."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from teegate.store import Ledger, create_engine, upgrade
from teegate.store.sqlite import (
    SQLITE_PAGE_SIZE,
    SQLITE_THREAD,
    Checkpointer,
    SqliteWriter,
    WalWriteback,
)
from tests.support.billing import ledger_state
from tests.support.ledger import Unopenable, a_hold, funded

PAGE_BYTES = SQLITE_PAGE_SIZE
WAL_FRAME_BYTES = 24 + PAGE_BYTES  # each frame: its header, then the page


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def database(engine: AsyncEngine) -> Path:
    assert engine.url.database is not None
    return Path(engine.url.database)


def wal_bytes(engine: AsyncEngine) -> int:
    wal = database(engine).with_name(database(engine).name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def checkpoint(engine: AsyncEngine) -> None:
    """Copy the setup (schema, account) into the database file and empty the WAL."""
    with contextlib.closing(sqlite3.connect(database(engine))) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


def holds_in_the_database_file(engine: AsyncEngine, tmp_path: Path) -> int:
    """Rows the checkpoints copied out of the WAL: a copy of the database file alone."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(database(engine), copy)
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM holds").fetchone()
    return int(count)


async def logged(logs: list[MutableMapping[str, Any]], event: str) -> None:
    while not any(entry["event"] == event for entry in logs):
        await asyncio.sleep(0.01)


async def test_a_lock_held_for_a_moment_is_waited_out_inline(
    sqlite_engine: AsyncEngine,
) -> None:
    """A checkpoint restarting the WAL holds the lock for a few ms: the batch retries
    on the loop, in steps finer than SQLite's busy handler, and no thread starts."""
    account = await funded(sqlite_engine, "acme", 10**12)
    async with Ledger(sqlite_engine).running() as ledger:
        assert (await ledger.place_hold(a_hold(account, "req_before"))).placed
        other = sqlite3.connect(database(sqlite_engine), timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            asyncio.get_running_loop().call_later(0.002, other.execute, "ROLLBACK")
            assert (await ledger.place_hold(a_hold(account, "req_after_a_moment"))).placed
            assert not other.in_transaction  # it did wait for the lock's release
        finally:
            other.close()
        assert not any(t.name.startswith(SQLITE_THREAD) for t in threading.enumerate())
    (await ledger_state(sqlite_engine, account)).check()


async def test_a_batch_waits_for_another_connection_s_lock_on_a_thread(
    sqlite_engine: AsyncEngine,
) -> None:
    account = await funded(sqlite_engine, "acme", 10**12)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with Ledger(sqlite_engine).running() as ledger:
        assert (await ledger.place_hold(a_hold(account, "req_before"))).placed
        other = sqlite3.connect(database(sqlite_engine), timeout=0, isolation_level=None)
        ticker = asyncio.create_task(tick())
        try:
            other.execute("BEGIN IMMEDIATE")  # what the `teegate` CLI does when it writes
            placing = asyncio.create_task(ledger.place_hold(a_hold(account, "req_blocked")))
            await asyncio.sleep(0.2)
            assert not placing.done()
            assert ticks >= 5  # the loop kept running: the batch waits on the writer's thread
            assert any(t.name.startswith(SQLITE_THREAD) for t in threading.enumerate())
            other.execute("ROLLBACK")
            assert (await asyncio.wait_for(placing, 5)).placed
        finally:
            ticker.cancel()
            other.close()
        assert (await ledger.place_hold(a_hold(account, "req_after"))).placed
    state = await ledger_state(sqlite_engine, account)
    state.check()
    assert state.open_holds == 3


async def test_the_writer_leaves_checkpoints_to_the_checkpointer(
    sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    """No commit checkpoints (SQLite's default would, every 1000 pages); closing does."""
    writer = SqliteWriter(sqlite_engine, checkpoint_interval_s=3600.0)  # only on close
    account = await funded(sqlite_engine, "acme", 10**15)
    checkpoint(sqlite_engine)
    async with Ledger(sqlite_engine, writer=writer).running() as ledger:
        for i in range(600):
            await ledger.place_hold(a_hold(account, f"req_{i}"))
        assert wal_bytes(sqlite_engine) > 1000 * WAL_FRAME_BYTES
        assert holds_in_the_database_file(sqlite_engine, tmp_path) == 0
    assert holds_in_the_database_file(sqlite_engine, tmp_path) == 600


async def test_the_wal_stays_bounded_under_steady_writes(
    sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    """Concurrent PASSIVE checkpoints alone never catch up with steady writes; past the
    restart bound, the checkpointer makes the WAL start over."""
    writer = SqliteWriter(sqlite_engine, checkpoint_interval_s=0.01, wal_restart_frames=64)
    account = await funded(sqlite_engine, "acme", 10**15)
    checkpoint(sqlite_engine)
    wals = set()
    async with Ledger(sqlite_engine, writer=writer).running() as ledger:
        for start in range(0, 4000, 8):  # 500 batches of 8: ~3600 WAL frames, never restarted
            holds = [a_hold(account, f"req_{i}") for i in range(start, start + 8)]
            await asyncio.gather(*(ledger.place_hold(h) for h in holds))
            wals.add(wal_salt(database(sqlite_engine)))
    # The WAL started over again and again (6-9 times here); PASSIVE alone: never, one WAL.
    # (Its peak size is no steady measure: a RESTART may wait on readers for 0.1 s.)
    assert len(wals) >= 3
    assert holds_in_the_database_file(sqlite_engine, tmp_path) == 4000


async def test_a_failed_checkpoint_is_logged_and_tried_again(
    sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    connect = Unopenable()
    writer = SqliteWriter(sqlite_engine, checkpoint_interval_s=0.01, connect=connect)
    account = await funded(sqlite_engine, "acme", 10**12)
    checkpoint(sqlite_engine)

    with capture_logs() as logs:
        async with Ledger(sqlite_engine, writer=writer).running() as ledger:
            assert (await ledger.place_hold(a_hold(account, "req_1"))).placed  # connected
            with connect.fails():
                await asyncio.wait_for(logged(logs, "wal_checkpoint_failed"), 5)
                assert (await ledger.place_hold(a_hold(account, "req_2"))).placed
    failed = next(e for e in logs if e["event"] == "wal_checkpoint_failed")
    assert (failed["log_level"], failed["error"]) == ("warning", "OperationalError")
    assert holds_in_the_database_file(sqlite_engine, tmp_path) == 2  # the next one succeeded


def wal_salt(path: Path) -> bytes:
    """The WAL header's salts: new ones each time a writer starts the WAL over."""
    with path.with_name(path.name + "-wal").open("rb") as wal:
        return wal.read(24)[16:24]


async def test_the_checkpointer_starts_the_next_wal_so_no_request_syncs_it(
    tmp_path: Path,
) -> None:
    """The first commit of a new WAL syncs its header (an fsync): once the WAL is copied,
    the checkpointer makes that commit itself, and the next writer only appends."""
    path = tmp_path / "wal.db"
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("CREATE TABLE t (x INTEGER)")
        writer.execute("INSERT INTO t VALUES (1)")

        writer.execute("PRAGMA wal_checkpoint(PASSIVE)")  # a plain checkpoint, for contrast
        salt = wal_salt(path)
        writer.execute("INSERT INTO t VALUES (2)")
        assert wal_salt(path) != salt  # that writer started the WAL over (and synced it)
        salt = wal_salt(path)

        checkpointer = Checkpointer(str(path), 3600, 4096, 3600)
        checkpointer.committed()
        await checkpointer.stop()  # its last checkpoint, then it lets go of the file
        assert wal_salt(path) != salt  # it copied the WAL and started it over itself
        salt = wal_salt(path)
        writer.execute("INSERT INTO t VALUES (3)")
        assert wal_salt(path) == salt  # this one appended to the WAL the checkpointer began
        assert writer.execute("SELECT count(*) FROM t").fetchone() == (3,)
    finally:
        writer.close()


async def test_between_checkpoints_the_wal_is_written_back_without_waiting(
    sqlite_engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that a checkpoint's fsync finds little left to write: started after commits,
    not when nothing was committed, and nothing is copied into the database by it."""
    writer = SqliteWriter(
        sqlite_engine, checkpoint_interval_s=3600.0, wal_writeback_interval_s=0.01
    )
    started: list[bool] = []
    start = WalWriteback.start

    def recording_start(self: WalWriteback) -> bool:
        started.append(start(self))
        return True

    monkeypatch.setattr(WalWriteback, "start", recording_start)
    account = await funded(sqlite_engine, "acme", 10**12)
    checkpoint(sqlite_engine)
    async with Ledger(sqlite_engine, writer=writer).running() as ledger:
        assert (await ledger.place_hold(a_hold(account, "req_1"))).placed
        for _ in range(200):
            if started:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert started == [sys.platform == "linux"]  # once: nothing was committed since
        assert holds_in_the_database_file(sqlite_engine, tmp_path) == 0


def test_writeback_follows_the_wal_file_it_is_given(tmp_path: Path) -> None:
    wal = tmp_path / "db-wal"
    writeback = WalWriteback(str(wal))
    try:
        assert writeback.start() is False  # no WAL yet
        wal.write_bytes(b"x" * 65536)
        assert writeback.start() is (sys.platform == "linux")
        wal.unlink()
        wal.write_bytes(b"y" * 65536)  # a new WAL file: a new inode
        assert writeback.start() is (sys.platform == "linux")
    finally:
        writeback.close()


async def test_a_new_sqlite_ledger_has_small_pages(sqlite_engine: AsyncEngine) -> None:
    """Every page a commit changes is written whole to the WAL: 2 KiB, not 4."""
    async with sqlite_engine.connect() as conn:
        assert await conn.scalar(text("PRAGMA page_size")) == SQLITE_PAGE_SIZE == 2048
