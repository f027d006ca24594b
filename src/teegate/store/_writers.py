"""What a ledger writer runs: writes in each engine's form, a whole batch per call.

The ledger's writes are the hot path of every request (a hold before the upstream
call, a settlement after it), so they skip what costs per statement:

- SQLite (`_sqlite_writer.py`): no aiosqlite hand-off per statement.
- PostgreSQL (`_postgres_writer.py`): no SQLAlchemy per statement, no pool ping.

Reads, accounts and migrations stay on the SQLAlchemy engine.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


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
