"""The ledger writer on PostgreSQL: its own connection, used through asyncpg.

SQLAlchemy's per-statement work and pool checkout (with its ping) are skipped;
the writer keeps one connection from the engine's pool and runs writes on the
asyncpg connection under it.

A batch of one is one statement, which commits on its own. A larger batch is
one transaction holding one statement per kind of write (all its holds, all
its settlements), not one per write: the writer waits one round trip per kind,
and the server pays its per-statement cost once per kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from teegate.billing import Placement
from teegate.store._ledger_postgres import apply
from teegate.store._ledger_postgres_batch import run_batch
from teegate.store._ledger_rows import LedgerWrite


class PostgresWriter:
    """The writer's own connection from the engine's pool, used through its driver."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under `_connection`
        self._in_use = False

    async def transaction(self, writes: Sequence[LedgerWrite]) -> list[Placement | bool]:
        driver = await self._connect()
        self._in_use = True
        try:
            if len(writes) == 1:
                results = [await apply(driver, writes[0])]
            else:
                async with driver.transaction():
                    results = await run_batch(driver, writes)
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
