"""The ledger writer on SQLite: one thread owns one plain sqlite3 connection.

aiosqlite hands every statement, BEGIN and COMMIT to its thread and back (about
twelve hand-offs a request); here a whole batch runs in one call on the writer's
own thread: one hand-off per batch.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.store._database import connect_sqlite, sqlite_file
from teegate.store._writers import Write

SQLITE_THREAD = "teegate-ledger-writer"
"""Name prefix of the SQLite writer's thread."""

SQLITE_RETURNING = (3, 35, 0)
"""The first SQLite with UPDATE ... RETURNING, which the conditional hold needs."""


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
