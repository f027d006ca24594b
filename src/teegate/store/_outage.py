"""Database failures mapped at the store boundary, by table.

A database that cannot be reached fails closed: the request is refused with
503 `service_unavailable` before anything goes upstream. Any other database
error is a bug or a refused statement and propagates as is (500, or the
caller's own handling, e.g. a unique name taken).

Errors arrive in two forms: wrapped by SQLAlchemy (reads, accounts) and raw from
the drivers (the ledger writer's sqlite3 and asyncpg connections). Both map the
same way: what SQLAlchemy calls OperationalError or InterfaceError, or a lost
connection, is an outage.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import sqlite3
from collections.abc import AsyncIterator, Mapping

from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from teegate.errors import ServiceUnavailable, map_error

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock: the transaction lost a race, retry it."""

OUTAGE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})
"""Besides class 08 (connection exception): too many connections, admin and crash
shutdown, cannot connect now (the server is starting or stopping)."""

UNAVAILABLE_MESSAGE = "billing is unavailable"


class OutageVerdict(enum.Enum):
    """What a database error says about the database."""

    OUTAGE = "outage"
    """Unreachable or unusable: 503 service_unavailable."""
    STATEMENT = "statement"
    """One statement was refused or a bug hit: the database is fine, the error propagates."""
    IF_INVALIDATED = "if_invalidated"
    """An outage only if SQLAlchemy invalidated the connection on the way."""
    UNLESS_RETRYABLE = "unless_retryable"
    """An outage unless its SQLSTATE says the transaction lost a race (retry it)."""


OUTAGE_VERDICTS: Mapping[type[BaseException], OutageVerdict] = {
    OSError: OutageVerdict.OUTAGE,  # the socket or the file (TimeoutError among them)
    ServiceUnavailable: OutageVerdict.OUTAGE,  # mapped already, further down
    sqlite3.OperationalError: OutageVerdict.OUTAGE,  # locked past the busy timeout, I/O, unopenable
    sqlite3.InterfaceError: OutageVerdict.OUTAGE,
    sqlite3.Error: OutageVerdict.STATEMENT,
    OperationalError: OutageVerdict.UNLESS_RETRYABLE,
    InterfaceError: OutageVerdict.UNLESS_RETRYABLE,
    DBAPIError: OutageVerdict.IF_INVALIDATED,
    PoolTimeout: OutageVerdict.OUTAGE,  # no pooled connection free within the pool timeout
    SQLAlchemyError: OutageVerdict.STATEMENT,
}
"""Builtin, sqlite3 (aiosqlite re-raises sqlite3's own) and SQLAlchemy errors."""


@functools.cache
def asyncpg_outage_verdicts() -> Mapping[type[BaseException], OutageVerdict]:
    """OUTAGE_VERDICTS plus asyncpg's raw errors (the batch writer's connection).

    Built on first use: a SQLite deployment never loads asyncpg (~0.1 s), and an
    asyncpg error cannot exist unless asyncpg is loaded already.
    """
    import asyncpg  # type: ignore[import-untyped]

    return {
        **OUTAGE_VERDICTS,
        asyncpg.InterfaceError: OutageVerdict.OUTAGE,  # client side: e.g. the connection closed
        asyncpg.PostgresConnectionError: OutageVerdict.OUTAGE,  # SQLSTATE class 08
        asyncpg.CannotConnectNowError: OutageVerdict.OUTAGE,  # the server is starting or stopping
        asyncpg.AdminShutdownError: OutageVerdict.OUTAGE,
        asyncpg.CrashShutdownError: OutageVerdict.OUTAGE,
        asyncpg.TooManyConnectionsError: OutageVerdict.OUTAGE,
        asyncpg.QueryCanceledError: OutageVerdict.OUTAGE,  # past the statement timeout
        asyncpg.PostgresError: OutageVerdict.STATEMENT,
        asyncpg.exceptions.InternalClientError: OutageVerdict.STATEMENT,  # protocol misuse: a bug
    }


def verdict(exc: BaseException) -> OutageVerdict:
    """The table's verdict on `exc`; an error no entry covers is not the database's."""
    from_asyncpg = type(exc).__module__.startswith("asyncpg")
    table = asyncpg_outage_verdicts() if from_asyncpg else OUTAGE_VERDICTS
    return map_error(type(exc), table) or OutageVerdict.STATEMENT


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)  # SQLAlchemy wraps the driver's error; asyncpg's is raw
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def is_retryable(exc: BaseException) -> bool:
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def is_outage(exc: BaseException) -> bool:
    """The database is unreachable or unusable, as opposed to refusing one statement.

    SQLAlchemy wraps a driver error it has no class for in a bare DBAPIError: its
    SQLSTATE still tells an outage (a connection refused while PostgreSQL shuts
    down is 57P03, and no connection was there to invalidate).
    """
    code = sqlstate(exc)
    if isinstance(exc, DBAPIError) and code and (code[:2] == "08" or code in OUTAGE_SQLSTATES):
        return True
    found = verdict(exc)
    if found is OutageVerdict.IF_INVALIDATED or found is OutageVerdict.UNLESS_RETRYABLE:
        invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
        return invalidated or (found is OutageVerdict.UNLESS_RETRYABLE and not is_retryable(exc))
    return found is OutageVerdict.OUTAGE


def unavailable(exc: BaseException) -> ServiceUnavailable:
    if isinstance(exc, ServiceUnavailable):
        return exc
    error = ServiceUnavailable(UNAVAILABLE_MESSAGE)
    error.__cause__ = exc
    return error


@contextlib.asynccontextmanager
async def outage_as_unavailable() -> AsyncIterator[None]:
    """Wrap one store call: an unreachable database becomes ServiceUnavailable."""
    try:
        yield
    except Exception as exc:
        if is_outage(exc):
            raise unavailable(exc) from exc
        raise
