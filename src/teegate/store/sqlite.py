"""The ledger's SQLite backend, for the tests that drive it through its own names:
its writer and checkpointer, and what they are made of."""

from teegate.store._database import SQLITE_PAGE_SIZE, connect_sqlite
from teegate.store._sqlite_writer import (
    CHECKPOINT_THREAD,
    SQLITE_THREAD,
    Checkpointer,
    ConnectSqlite,
    SqliteWriter,
    WalWriteback,
)

__all__ = [
    "CHECKPOINT_THREAD",
    "SQLITE_PAGE_SIZE",
    "SQLITE_THREAD",
    "Checkpointer",
    "ConnectSqlite",
    "SqliteWriter",
    "WalWriteback",
    "connect_sqlite",
]
