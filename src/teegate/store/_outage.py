"""Database failures mapped at the store boundary.

A database that cannot be reached fails closed: the request is refused with
503 `service_unavailable` before anything goes upstream. Any other database
error is a bug and propagates as is (500).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from teegate.errors import ServiceUnavailable

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock: the transaction lost a race, retry it."""

UNAVAILABLE_MESSAGE = "billing is unavailable"


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def is_retryable(exc: BaseException) -> bool:
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def is_outage(exc: BaseException) -> bool:
    """The database is unreachable or unusable, as opposed to refusing one statement."""
    if isinstance(exc, OSError | TimeoutError | ServiceUnavailable):
        return True
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
