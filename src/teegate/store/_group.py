"""Group commit: concurrent ledger writes share one transaction.

One writer task drains a bounded queue into batches; a batch is one
transaction (one fsync on SQLite, one commit round trip on PostgreSQL), and
each write in it still gets its own result. Under load this turns N commits
into N / batch; idle, a write waits for nothing but its own transaction.

A batch is one call into the engine's writer, whatever its size: on SQLite the
whole transaction runs inline on the event loop (on a thread only while another
connection holds the write lock), on PostgreSQL as one statement per kind of
write on the writer's own connection; neither goes through SQLAlchemy
(`_sqlite_writer.py`, `_postgres_writer.py`).

Writes in a batch run ordered by their lock key (the account id), so two
writers never take account rows in opposite orders. If a batch fails for a
reason other than an outage, its writes are retried one transaction each, so
one bad write cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast, overload

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import Hold, Placement, Settlement
from teegate.errors import ServiceUnavailable
from teegate.invariants import invariant
from teegate.store._ledger_rows import LedgerWrite
from teegate.store._outage import UNAVAILABLE_MESSAGE, is_outage, is_retryable, unavailable
from teegate.store._postgres_writer import PostgresWriter
from teegate.store._sqlite_writer import SqliteWriter
from teegate.store._writers import Writer

log = structlog.get_logger("teegate.store")

DEFAULT_MAX_BATCH = 256
"""Writes per transaction: large enough to amortise a commit, small enough to keep
one transaction's locks short."""

DEFAULT_MAX_QUEUE = 8192
"""Writes waiting for the writer; beyond this, submitters wait (backpressure)."""

MAX_ATTEMPTS = 3
"""Tries for one write retried alone after losing a deadlock or serialization race."""


@dataclass(slots=True)
class _Pending:
    lock_key: int
    write: LedgerWrite
    done: asyncio.Future[Placement | bool]


_STOP = object()


class GroupCommitter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
        writer: Writer | None = None,
    ) -> None:
        """`writer` defaults to the engine's own (`writer_for`)."""
        invariant(max_batch > 0 and max_queue > 0, "group commit bounds must be positive")
        self._writer = writer_for(engine) if writer is None else writer
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | object] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.transactions = 0
        self.writes = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[GroupCommitter]:
        """The writer runs inside this block; leaving it commits what was queued first,
        then closes the writer's connection (and, on SQLite, stops its thread)."""
        invariant(self._task is None, "the group committer is already running")
        self._task = asyncio.create_task(self._drain())
        try:
            yield self
        finally:
            self._closing = True
            try:
                if not self._task.done():
                    await self._queue.put(_STOP)
                await self._task
                self._fail_leftovers([])  # a write that raced the close is refused, not lost
            finally:
                await self._writer.close()

    @overload
    async def submit(self, lock_key: int, write: Hold) -> Placement: ...

    @overload
    async def submit(self, lock_key: int, write: Settlement) -> bool: ...

    async def submit(self, lock_key: int, write: LedgerWrite) -> Placement | bool:
        """Queue one write and wait for the transaction that carries it to commit."""
        if self._task is None or self._closing or self._task.done():
            raise ServiceUnavailable(UNAVAILABLE_MESSAGE)
        done: asyncio.Future[Placement | bool] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(lock_key, write, done))
        return await done

    async def _drain(self) -> None:
        pending: list[_Pending] = []
        try:
            while True:
                pending, stop = await self._next_batch()
                if pending:
                    await self._commit(pending)
                pending = []
                if stop:
                    return
        finally:
            self._fail_leftovers(pending)

    async def _next_batch(self) -> tuple[list[_Pending], bool]:
        first = await self._queue.get()
        if first is _STOP:
            return [], True
        batch = [cast(_Pending, first)]
        while len(batch) < self._max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _STOP:
                return batch, True
            batch.append(cast(_Pending, item))
        return batch, False

    async def _commit(self, batch: list[_Pending]) -> None:
        batch.sort(key=lambda p: p.lock_key)
        try:
            results = await self._writer.transaction([p.write for p in batch])
        except Exception as exc:
            if is_outage(exc):
                for p in batch:
                    _fail(p, unavailable(exc))
                return
            log.warning("batch_retried_alone", writes=len(batch), error=type(exc).__name__)
            await self._one_by_one(batch)
            return
        self.transactions += 1
        self.writes += len(batch)
        for p, result in zip(batch, results, strict=True):
            _resolve(p, result)

    async def _one_by_one(self, batch: list[_Pending]) -> None:
        for p in batch:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    [result] = await self._writer.transaction([p.write])
                except Exception as exc:
                    if is_retryable(exc) and attempt < MAX_ATTEMPTS:
                        continue
                    _fail(p, unavailable(exc) if is_outage(exc) else exc)
                    break
                self.transactions += 1
                self.writes += 1
                _resolve(p, result)
                break

    def _fail_leftovers(self, pending: list[_Pending]) -> None:
        """If the writer stops early (cancelled), no submitter waits forever."""
        leftovers = list(pending)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not _STOP:
                leftovers.append(cast(_Pending, item))
        for p in leftovers:
            _fail(p, ServiceUnavailable(UNAVAILABLE_MESSAGE))


def writer_for(engine: AsyncEngine) -> Writer:
    if engine.dialect.name == "sqlite":
        return SqliteWriter(engine)
    if engine.dialect.name == "postgresql":
        return PostgresWriter(engine)
    raise ValueError(f"no ledger writer for {engine.dialect.name}")


def _resolve(pending: _Pending, result: Placement | bool) -> None:
    if not pending.done.done():
        pending.done.set_result(result)


def _fail(pending: _Pending, exc: BaseException) -> None:
    if not pending.done.done():
        pending.done.set_exception(exc)
