"""The ledger writer's connections: each runs one whole batch of writes per call.

The ledger's writes are the hot path of every request (a hold before the upstream
call, a settlement after it), so they skip what costs per statement:

- SQLite: aiosqlite hands every statement, BEGIN and COMMIT to its thread and back
  (about twelve hand-offs a request). Here one thread owns one plain sqlite3
  connection and runs a whole transaction per call: one hand-off per batch.
- PostgreSQL: SQLAlchemy's per-statement work and pool checkout (with its ping)
  are skipped; the writer keeps one connection from the engine's pool and runs
  each write as one statement on the asyncpg connection under it.

Reads, accounts and migrations stay on the SQLAlchemy engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from teegate.store._database import connect_sqlite, sqlite_file

T_co = TypeVar("T_co", covariant=True)

SQLITE_THREAD = "teegate-ledger-writer"
"""Name prefix of the SQLite writer's thread."""

SQLITE_RETURNING = (3, 35, 0)
"""The first SQLite with UPDATE ... RETURNING, which the conditional hold needs."""


class Write(Protocol[T_co]):
    """One ledger write, in the form each engine runs; the writer calls its engine's.

    `on_postgres` must make its changes in one statement (anything after it may
    only read): a batch of one runs without BEGIN and COMMIT, since a statement
    outside a transaction block commits on its own. That saves two round trips
    when writes arrive one at a time.
    """

    def on_sqlite(self, conn: sqlite3.Connection) -> T_co: ...

    def on_postgres(self, conn: Any) -> Awaitable[T_co]: ...


class Writer(Protocol):
    async def transaction(self, writes: Sequence[Write[Any]]) -> list[Any]:
        """Run `writes` in order in one transaction, committed before this returns."""
        ...

    async def close(self) -> None: ...


def writer_for(engine: AsyncEngine) -> Writer:
    if engine.dialect.name == "sqlite":
        return SqliteWriter(engine)
    if engine.dialect.name == "postgresql":
        return PostgresWriter(engine)
    raise ValueError(f"no ledger writer for {engine.dialect.name}")


class SqliteWriter:
    """One thread, one connection: a batch's statements never leave that thread."""

    def __init__(self, engine: AsyncEngine) -> None:
        path = sqlite_file(engine.url)
        if path is None:
            raise ValueError("the ledger needs a SQLite file: in memory, it has no writer")
        if sqlite3.sqlite_version_info < SQLITE_RETURNING:
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is older than 3.35")
        self._path = path
        # The thread starts with the first batch; a Ledger that only reads has none.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=SQLITE_THREAD)
        self._started = False
        self._conn: sqlite3.Connection | None = None  # used on the writer thread only

    async def transaction(self, writes: Sequence[Write[Any]]) -> list[Any]:
        self._started = True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, writes)

    async def close(self) -> None:
        """Close the connection on its thread, then stop the thread."""
        if self._started:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown(wait=True)  # idle by now: the join does not block the loop

    def _transaction(self, writes: Sequence[Write[Any]]) -> list[Any]:
        conn = self._conn or self._connect()
        # IMMEDIATE takes the write lock now (waiting up to the busy timeout), so no
        # statement of the batch can fail to upgrade a read lock half-way through.
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [write.on_sqlite(conn) for write in writes]
            conn.execute("COMMIT")
        except BaseException:
            self._roll_back(conn)
            raise
        return results

    def _connect(self) -> sqlite3.Connection:
        self._conn = connect_sqlite(self._path)
        return self._conn

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:  # a connection that cannot roll back is replaced, not reused
            self._disconnect()

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class PostgresWriter:
    """The writer's own connection from the engine's pool, used through its driver."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under `_connection`
        self._in_use = False

    async def transaction(self, writes: Sequence[Write[Any]]) -> list[Any]:
        driver = await self._connect()
        self._in_use = True
        try:
            if len(writes) == 1:
                results = [await writes[0].on_postgres(driver)]
            else:
                async with driver.transaction():
                    results = [await write.on_postgres(driver) for write in writes]
        except Exception:
            self._in_use = False
            if driver.is_closed():
                await self._drop()
            raise
        self._in_use = False
        return results

    async def close(self) -> None:
        if self._in_use:  # interrupted mid-transaction: not fit to go back to the pool
            await self._drop()
        elif self._connection is not None:
            connection, self._connection, self._driver = self._connection, None, None
            await connection.close()

    async def _connect(self) -> Any:
        """The kept connection, or a new one if the server closed it (restarted, cut):
        the check costs no round trip, unlike the pool's ping."""
        if self._driver is not None and not self._driver.is_closed():
            return self._driver
        await self._drop()
        connection = await self._engine.connect()
        try:
            raw = await connection.get_raw_connection()
        except BaseException:
            await connection.close()
            raise
        self._connection, self._driver = connection, raw.driver_connection
        return self._driver

    async def _drop(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        self._in_use = False
        if connection is not None:
            with contextlib.suppress(Exception):  # it is broken; discarding it is all that is left
                await connection.invalidate()
                await connection.close()
