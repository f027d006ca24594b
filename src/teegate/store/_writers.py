"""What a ledger writer runs: writes in each engine's form, a whole batch per call.

The ledger's writes are the hot path of every request (a hold before the upstream
call, a settlement after it), so they skip what costs per statement:

- SQLite (`_sqlite_writer.py`): no aiosqlite hand-off per statement.
- PostgreSQL (`_postgres_writer.py`): no SQLAlchemy per statement, no pool ping,
  and one statement per kind of write for a whole batch.

Reads, accounts and migrations stay on the SQLAlchemy engine.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, Protocol, Self, TypeVar

T_co = TypeVar("T_co", covariant=True)


class Write(Protocol[T_co]):
    """One ledger write, in the form each engine runs; the writer calls its engine's.

    `on_postgres` must make its changes in one statement (anything after it may
    only read): a batch of one runs without BEGIN and COMMIT, since a statement
    outside a transaction block commits on its own. That saves two round trips
    when writes arrive one at a time.

    `on_postgres_batch` runs every write of one kind in a batch as one statement
    (plus, rarely, follow-ups on the same connection), inside the batch's
    transaction, and returns their results in order: what `on_postgres` would
    have returned for each, in some serial order of the batch. Kinds run in
    ascending `batch_phase`; `later` is every account the batch's later kinds
    will change. The statement locks those with its own, ascending, after any
    rows it claims, so a transaction takes its account rows in one ascending
    pass and two writers cannot deadlock on them.
    """

    batch_phase: ClassVar[int]

    @property
    def account_id(self) -> int: ...

    def on_sqlite(self, conn: sqlite3.Connection) -> T_co: ...

    def on_postgres(self, conn: Any) -> Awaitable[T_co]: ...

    @classmethod
    def on_postgres_batch(
        cls, conn: Any, writes: Sequence[Self], later: Sequence[int]
    ) -> Awaitable[Sequence[T_co]]: ...


class Writer(Protocol):
    async def transaction(self, writes: Sequence[Write[Any]]) -> list[Any]:
        """Run `writes` in one transaction, committed before this returns; results in
        `writes`' order (SQLite runs them in that order; PostgreSQL kind by kind)."""
        ...

    async def close(self) -> None: ...
