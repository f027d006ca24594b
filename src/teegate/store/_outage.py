"""Database failures mapped at the store boundary.

A database that cannot be reached fails closed: the request is refused with
503 `service_unavailable` before anything goes upstream. Any other database
error is a bug and propagates as is (500).

Errors arrive in two forms: wrapped by SQLAlchemy (reads, accounts) and raw from
the drivers (the ledger writer's sqlite3 and asyncpg connections). Both map the
same way: what SQLAlchemy calls OperationalError or InterfaceError, or a lost
connection, is an outage.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from teegate.errors import ServiceUnavailable

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock: the transaction lost a race, retry it."""

UNAVAILABLE_MESSAGE = "billing is unavailable"

_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ServiceUnavailable,
    sqlite3.OperationalError,  # locked past the busy timeout, I/O error, unopenable file
    sqlite3.InterfaceError,
)


def _is_asyncpg_outage(exc: BaseException) -> bool:
    # Imported here: a SQLite deployment never loads asyncpg (~0.1 s), and an asyncpg
    # error cannot exist unless asyncpg is loaded already.
    import asyncpg  # type: ignore[import-untyped]

    return isinstance(
        exc,
        asyncpg.InterfaceError  # the client side: e.g. the connection is closed
        | asyncpg.PostgresConnectionError  # SQLSTATE class 08
        | asyncpg.CannotConnectNowError  # the server is starting or shutting down
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.TooManyConnectionsError,
    )


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)  # SQLAlchemy wraps the driver's error; asyncpg's is raw
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def is_retryable(exc: BaseException) -> bool:
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def is_outage(exc: BaseException) -> bool:
    """The database is unreachable or unusable, as opposed to refusing one statement."""
    if isinstance(exc, _OUTAGES):
        return True
    if type(exc).__module__.startswith("asyncpg"):
        return _is_asyncpg_outage(exc)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError) and not is_retryable(exc)


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
