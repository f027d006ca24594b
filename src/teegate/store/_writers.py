"""What a ledger writer runs: a whole batch of writes per call, in its engine's form.

The ledger's writes are the hot path of every request (a hold before the upstream
call, a settlement after it), so they skip what costs per statement:

- SQLite (`_sqlite_writer.py`, running `_ledger_sqlite.py`): no aiosqlite hand-off
  per statement.
- PostgreSQL (`_postgres_writer.py`, running `_ledger_postgres.py` for one write and
  `_ledger_postgres_batch.py` for more): no SQLAlchemy per statement, no pool ping,
  and one statement per kind of write for a whole batch.

Reads, accounts and migrations stay on the SQLAlchemy engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from teegate.billing import Placement
from teegate.store._ledger_rows import LedgerWrite


class Writer(Protocol):
    async def transaction(self, writes: Sequence[LedgerWrite]) -> list[Placement | bool]:
        """Run `writes` in one transaction, committed before this returns; results in
        `writes`' order (SQLite runs them in that order; PostgreSQL kind by kind)."""
        ...

    async def close(self) -> None: ...
