"""The ledger writer on SQLite: batches run on the event loop, checkpoints on a thread.

Handing a batch to a thread and back (two wake-ups) costs more than the batch's
SQL and buys no parallelism under the GIL. So a batch runs inline, on a connection
with no busy timeout: if BEGIN IMMEDIATE finds the write lock taken (the `teegate`
CLI, a checkpoint restarting the WAL), nothing has started yet, and that batch runs
on a thread whose connection waits for the lock instead. The loop never waits on a
lock.

An auto-checkpoint makes the commit that crosses ~1000 WAL pages copy them into
the database and fsync it. The writer's connections turn auto-checkpoints off; a
checkpointer thread with its own connection does that work about once a second.
The first commit after the WAL starts over syncs the new WAL header (SQLite does,
unless synchronous=OFF): an fsync. So once the checkpointer has copied the whole
WAL, it makes that first commit itself (`_start_wal_over`): otherwise the next
request's hold pays it, and after a quiet second that is every request's.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar, cast

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import Placement
from teegate.store._database import SQLITE_BUSY_TIMEOUT_S, connect_sqlite, sqlite_file
from teegate.store._ledger_rows import LedgerWrite
from teegate.store._ledger_sqlite import apply

log = structlog.get_logger("teegate.store")

T = TypeVar("T")

SQLITE_THREAD = "teegate-ledger-writer"
"""Name prefix of the thread that runs a batch while the write lock is busy."""

CHECKPOINT_THREAD = "teegate-ledger-checkpointer"
"""Name of the checkpointer's thread."""

SQLITE_RETURNING = (3, 35, 0)
"""The first SQLite with UPDATE ... RETURNING, which the conditional hold needs."""

WRITER_PRAGMAS = ("PRAGMA wal_autocheckpoint=0", "PRAGMA journal_size_limit=67108864")
"""The writer's connections leave checkpoints to the checkpointer, and when the WAL
starts over, cut the file back to 64 MiB (a burst would otherwise leave it at its peak)."""

CHECKPOINT_INTERVAL_S = 1.0
"""How often the checkpointer copies the WAL into the database, if anything committed.
More often makes each checkpoint shorter but not the requests' tail latency, and
multiplies the fsyncs (docs/performance.md, Design notes)."""

INLINE_RETRY_PAUSES_S = (0.0005, 0.001, 0.002, 0.004)
"""Pauses between inline attempts while the write lock is busy. A checkpoint that
restarts the WAL holds it for a few ms; SQLite's own busy handler (on the thread)
would sleep 1, 2, 5, 10 ms... past its release. Past these, the batch waits on the
thread (the CLI, or a long checkpoint, holds the lock)."""

WAL_RESTART_FRAMES = 4096
"""WAL frames (16 MiB of 4 KiB pages) past which the checkpointer makes the WAL restart.

A writer starts the WAL over only if it begins while every frame is copied; under
steady writes (a commit every few ms is enough) the checkpointer keeps losing that
race, and the WAL would grow for as long as the load lasts."""

WAL_WRITEBACK_INTERVAL_S = 0.1
"""How often, between checkpoints, the checkpointer starts the kernel writing out what
was committed to the WAL since (without waiting for it). A checkpoint must fsync the
WAL first, and a whole second of commits flushed at once keeps the kernel busy on the
event loop's core long enough to show in the tail (docs/performance.md, Design notes)."""

CHECKPOINT_PASSES = 4
"""PASSIVE checkpoints per wake-up at most. The first copies up to a second of commits,
each next one what was committed during the one before, until one finds nothing new;
under load they leave a RESTART little to copy while it holds writers back."""

CHECKPOINT_BUSY_TIMEOUT_S = 0.1
"""How long a RESTART checkpoint may wait for the write lock, then (holding it, so
writers wait too) for readers of older frames; past it, it gives up until next time."""


class ConnectSqlite(Protocol):
    """Opens a writer's or the checkpointer's connection (`connect_sqlite`)."""

    def __call__(
        self, path: str, *, busy_timeout_s: float, pragmas: Sequence[str] = ()
    ) -> sqlite3.Connection: ...


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock (SQLITE_BUSY or SQLITE_LOCKED, any extended code)."""
    code = getattr(exc, "sqlite_errorcode", None)  # absent on an error raised by hand
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class SqliteWriter:
    """Batches on the event loop's own connection; on a thread only when the lock is busy.

    The checkpointer's timing and the way connections open are parameters, so that a
    test can make checkpoints frequent or rare, or a file unopenable."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        wal_restart_frames: int = WAL_RESTART_FRAMES,
        wal_writeback_interval_s: float = WAL_WRITEBACK_INTERVAL_S,
        connect: ConnectSqlite = connect_sqlite,
    ) -> None:
        path = sqlite_file(engine.url)
        if path is None:
            raise ValueError("the ledger needs a SQLite file: in memory, it has no writer")
        if sqlite3.sqlite_version_info < SQLITE_RETURNING:
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is older than 3.35")
        self._inline = _Connection(path, connect, busy_timeout_s=0)  # the loop never waits
        self._waiting = _Connection(path, connect, busy_timeout_s=SQLITE_BUSY_TIMEOUT_S)
        self._thread: ThreadPoolExecutor | None = None  # started the first time a lock is busy
        self._checkpointer = Checkpointer(
            path,
            checkpoint_interval_s,
            wal_restart_frames,
            wal_writeback_interval_s,
            connect=connect,
        )

    async def transaction(self, writes: Sequence[LedgerWrite]) -> list[Placement | bool]:
        return await self.run(functools.partial(_apply_all, writes))

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in a transaction of its own on the writer's connection. Whatever else
        writes on a request's behalf (receipts) comes through here too: a second
        connection holding the write lock would make the next hold wait for it."""
        result = await self._inline_or_on_thread(work)
        self._checkpointer.committed()
        return result

    async def _inline_or_on_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        for pause_s in INLINE_RETRY_PAUSES_S:
            try:
                conn = self._inline.begin()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                await asyncio.sleep(pause_s)
                continue
            return self._inline.finish(conn, work)
        return await self._on_thread(work)

    async def close(self) -> None:
        """Close the connections (the thread's on its thread), then stop the threads; the
        checkpointer's last checkpoint copies what the WAL still holds."""
        self._inline.close()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._waiting.close)
            self._thread.shutdown(wait=True)  # idle by now: the join does not block the loop
            self._thread = None
        await self._checkpointer.stop()

    async def _on_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=SQLITE_THREAD)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._waiting.run, work)


def _apply_all(writes: Sequence[LedgerWrite], conn: sqlite3.Connection) -> list[Placement | bool]:
    return [apply(conn, write) for write in writes]


class _Connection:
    """One writer connection, opened when first used, on the thread that uses it."""

    def __init__(self, path: str, connect: ConnectSqlite, *, busy_timeout_s: float) -> None:
        self._path = path
        self._open = connect
        self._busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None

    def begin(self) -> sqlite3.Connection:
        """Take the write lock now, so no statement of the batch can fail to upgrade a
        read lock half-way through; a busy lock raises before anything has started."""
        conn = self._conn or self._connect()
        conn.execute("BEGIN IMMEDIATE")
        return conn

    def finish(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._roll_back(conn)
            raise
        return result

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self.finish(self.begin(), work)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        self._conn = self._open(
            self._path, busy_timeout_s=self._busy_timeout_s, pragmas=WRITER_PRAGMAS
        )
        return self._conn

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:  # a connection that cannot roll back is replaced, not reused
            self.close()


class Checkpointer:
    """Copies the WAL into the database on its own thread, so that no commit pays for it.

    It wakes every `interval_s` and checkpoints if anything was committed since its last
    checkpoint, and once more when stopped; in between, it starts the WAL's writeback
    (`WalWriteback`) every `writeback_s` if anything was committed meanwhile. PASSIVE
    checkpoints never wait and never make anyone wait. If they cannot catch up and the
    WAL is past `restart_frames`, a RESTART one holds writers back (the writer's batch
    meanwhile waits on its thread) while it copies the last frames and waits for
    readers; then the checkpointer starts the WAL over itself.
    """

    def __init__(
        self,
        path: str,
        interval_s: float,
        restart_frames: int,
        writeback_s: float,
        *,
        connect: ConnectSqlite = connect_sqlite,
    ) -> None:
        self._path = path
        self._open = connect
        self._interval_s = interval_s
        self._restart_frames = restart_frames
        self._writeback_s = min(writeback_s, interval_s)
        self._writeback = WalWriteback(path + "-wal")
        self._commits = 0  # counted on the event loop, only read by the thread
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None  # started with the first commit
        self._conn: sqlite3.Connection | None = None  # the thread's

    def committed(self) -> None:
        self._commits += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=CHECKPOINT_THREAD, daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        """Wake the thread for its last checkpoint and wait for it on another thread: the
        checkpoint's fsync must not hold up the loop."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        checkpointed = written = 0
        due = time.monotonic() + self._interval_s
        try:
            while True:
                stopping = self._stopping.wait(self._writeback_s)
                commits = self._commits
                if stopping or time.monotonic() >= due:
                    due = time.monotonic() + self._interval_s
                    if commits != checkpointed and self._checkpoint():
                        checkpointed = written = commits
                elif commits != written:
                    self._writeback.start()
                    written = commits
                if stopping:
                    return
        finally:
            self._writeback.close()
            self._disconnect()

    def _checkpoint(self) -> bool:
        """One checkpoint; a failure is logged and retried on the next wake-up."""
        try:
            conn = self._conn or self._connect()
            frames, copied = _copy_wal(conn)
            if not copied and frames > self._restart_frames:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                copied = busy == 0  # busy: next time
            if copied:
                _start_wal_over(conn)
        except sqlite3.Error as exc:
            log.warning("wal_checkpoint_failed", error=type(exc).__name__, detail=str(exc))
            self._disconnect()
            return False
        return True

    def _connect(self) -> sqlite3.Connection:
        self._conn = self._open(self._path, busy_timeout_s=CHECKPOINT_BUSY_TIMEOUT_S)
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _copy_wal(conn: sqlite3.Connection) -> tuple[int, bool]:
    """PASSIVE passes, each copying what was committed during the one before, until one
    finds nothing new: the database then holds the whole WAL, and the next writer starts
    it over. The WAL's frames, and whether that happened."""
    seen = -1
    for _ in range(CHECKPOINT_PASSES):
        _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if copied == frames == seen:
            return frames, True
        seen = frames
    return seen, False


def _start_wal_over(conn: sqlite3.Connection) -> None:
    """Commit a change of nothing (the header's user_version, rewritten as it is): as
    the first commit since the WAL was copied, it starts the WAL over and syncs its
    header here, on the checkpointer's thread. Should a writer get there first, or a
    reader still use the old WAL, it is one more frame and nothing else."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        conn.execute(f"PRAGMA user_version = {int(version)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class WalWriteback:
    """Starts the kernel writing a file's dirty pages out, without waiting for the disk
    (Linux's sync_file_range(SYNC_FILE_RANGE_WRITE), as PostgreSQL's *_flush_after
    settings do): nothing here is made durable, that stays the checkpoint's fsync. Where
    the call does not exist, `start` does nothing."""

    SYNC_FILE_RANGE_WRITE = 2

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._call = _sync_file_range()

    def start(self) -> bool:
        """True if writeback was started."""
        if self._call is None:
            return False
        try:
            if self._fd is not None and os.fstat(self._fd).st_ino != os.stat(self._path).st_ino:
                self.close()  # a new WAL file
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY)
        except OSError:  # no WAL yet, or gone: nothing to write out
            self.close()
            return False
        return self._call(self._fd, 0, 0, self.SYNC_FILE_RANGE_WRITE) == 0

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):  # not Linux
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], call)
