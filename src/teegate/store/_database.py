"""Engines for SQLite (embedded default) and PostgreSQL (scale-out)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_S = 30
"""How long a writer waits for another connection's write lock before giving up."""

SQLITE_PAGE_SIZE = 2048
"""Bytes per page of a new database (SQLite's default is 4096)."""

SQLITE_PRAGMAS = (
    # Every page a commit changes is written whole to the WAL, and each request
    # commits twice (hold, settlement): small rows, so small pages halve those
    # bytes. It takes effect only where the file is new (before WAL and tables).
    f"PRAGMA page_size={SQLITE_PAGE_SIZE}",
    # WAL lets readers run beside the writer; NORMAL is durable across
    # application crashes, which is what a hold must survive.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
"""Every SQLite connection teegate opens: the engine's and the ledger writer's own.
The busy timeout is the driver's `timeout`: the ledger writer's event-loop connection
must have none."""


POOL_SIZE = 10
POOL_TIMEOUT_S = 5.0
"""How long a request waits for a pooled connection before it is refused (503): a
burst larger than the pool queues this long, not the thirty seconds SQLAlchemy
would wait, and never answers 500."""


def create_engine(
    url: str,
    *,
    pool_size: int = POOL_SIZE,
    pool_timeout_s: float = POOL_TIMEOUT_S,
    statement_timeout_s: float | None = None,
    connect_timeout_s: float | None = None,
) -> AsyncEngine:
    """An engine whose waits are all bounded where they are given: the pool checkout
    always; on PostgreSQL, with `statement_timeout_s` each statement (client side, so a
    stalled network, not only a slow server, ends in TimeoutError: an outage, 503) and
    with `connect_timeout_s` each connect. The CLI's own commands (migrations) leave
    statements unbounded."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, pool_size=pool_size, pool_timeout_s=pool_timeout_s)
    connect_args: dict[str, Any] = {}
    if statement_timeout_s is not None:
        connect_args["command_timeout"] = statement_timeout_s
    if connect_timeout_s is not None:
        connect_args["timeout"] = connect_timeout_s
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database: readiness asks it, and only the store talks SQL."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def sqlite_file(url: URL) -> str | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    database = url.database
    return database if database and database != ":memory:" else None


def apply_sqlite_pragmas(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def connect_sqlite(
    path: str, *, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S, pragmas: Sequence[str] = ()
) -> sqlite3.Connection:
    """A plain sqlite3 connection set up as the engine's are, then `pragmas`, in autocommit
    mode: its owner says BEGIN and COMMIT itself."""
    connection = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    try:
        apply_sqlite_pragmas(connection)
        for pragma in pragmas:
            connection.execute(pragma)
    except BaseException:  # e.g. locked, with no busy timeout: not left open half set up
        connection.close()
        raise
    return connection


def _sqlite_engine(url: str, *, pool_size: int, pool_timeout_s: float) -> AsyncEngine:
    database = sqlite_file(make_url(url))
    if database is None:  # one shared in-memory connection (StaticPool): nothing to size
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=pool_timeout_s,
        )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        apply_sqlite_pragmas(dbapi_connection)

    return engine
