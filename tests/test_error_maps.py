"""Every exception a boundary's dependency defines is mapped on purpose.

As httpx's tests/test_exceptions.py does for httpcore: each dependency's exception
classes are enumerated from the installed package, and each must be a key of the
boundary's table, or be listed here with the key that covers it and why, or be
listed as one the boundary never sees. A class a dependency upgrade adds fails
these tests until someone decides what it means.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import ssl
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import cryptography.exceptions
import dcap_qvl
import jwt
import pytest
import redis.exceptions
import sqlalchemy.exc as sa_exc
import sqlalchemy.ext.asyncio.exc as sa_async_exc
import stripe
import stripe.oauth_error

from teegate.attestation import FAIL_CLOSED
from teegate.attestation.http import UNAVAILABLE_ON
from teegate.errors import (
    AttestationFailed,
    ServiceUnavailable,
    SSEError,
    TeegateError,
    UpstreamError,
    UpstreamKeyChanged,
    UpstreamTimeout,
    WebhookRejected,
    map_error,
)
from teegate.payments import STRIPE_ERRORS
from teegate.ratelimit.redis import DEGRADE_ON
from teegate.store import OUTAGE_VERDICTS, OutageVerdict, asyncpg_outage_verdicts, is_outage
from teegate.upstream import REQUEST_ERRORS, STREAM_ERRORS

Table = Mapping[type[BaseException], Any]
Covered = dict[type[BaseException], tuple[type[BaseException], str]]


def exception_classes(*modules: ModuleType) -> set[type[BaseException]]:
    """The exception classes `modules` expose, and the subclasses of those that
    `modules` define without exposing them; not builtins they re-export, nor
    warnings (warned, not raised)."""
    names = {module.__name__ for module in modules}
    roots = {name.split(".")[0] for name in names}
    found: set[type[BaseException]] = set()
    for module in modules:
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException):
                found.add(value)
                found |= {sub for sub in _with_subclasses(value) if sub.__module__ in names}
    return {
        cls
        for cls in found
        if cls.__module__.split(".")[0] in roots and not issubclass(cls, Warning)
    }


def _with_subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _with_subclasses(sub)
    return found


def covered_by(
    parent: type[BaseException], reason: str, classes: Iterable[type[BaseException]]
) -> Covered:
    return dict.fromkeys(classes, (parent, reason))


def nearest_key(cls: type[BaseException], table: Table) -> type[BaseException] | None:
    return next((base for base in cls.__mro__ if base in table), None)


def assert_all_decided(
    classes: set[type[BaseException]],
    table: Table,
    covered: Covered,
    never_seen: Mapping[type[BaseException], str] | None = None,
) -> None:
    never_seen = never_seen or {}
    undecided = sorted(
        cls.__qualname__
        for cls in classes
        if cls not in table and cls not in covered and cls not in never_seen
    )
    assert not undecided, f"decide how these map, then list them: {undecided}"
    for cls, (parent, reason) in covered.items():
        assert parent in table, f"{cls.__name__}: {parent.__name__} is not a key"
        assert nearest_key(cls, table) is parent, f"{cls.__name__} is not mapped by {parent}"
        assert reason
    for cls, reason in never_seen.items():
        assert cls not in table and cls not in covered and reason
    stale = (set(covered) | set(never_seen)) - classes
    assert not stale, f"listed here but no longer defined: {stale}"


# --- aiohttp: the upstream client -------------------------------------------------

AIOHTTP = exception_classes(aiohttp, aiohttp.client_exceptions)
AIOHTTP_FAILURES = covered_by(
    aiohttp.ClientError,
    "the connection, TLS, the HTTP exchange or the body failed: the upstream is at fault",
    [
        aiohttp.ClientConnectionError,
        aiohttp.ClientConnectionResetError,
        aiohttp.ClientConnectorCertificateError,
        aiohttp.ClientConnectorDNSError,
        aiohttp.ClientConnectorError,
        aiohttp.ClientConnectorSSLError,
        aiohttp.ClientHttpProxyError,
        aiohttp.ClientOSError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientProxyConnectionError,
        aiohttp.ClientResponseError,
        aiohttp.ClientSSLError,
        aiohttp.ContentTypeError,
        aiohttp.InvalidURL,
        aiohttp.InvalidUrlClientError,
        aiohttp.InvalidUrlRedirectClientError,
        aiohttp.NonHttpUrlClientError,
        aiohttp.NonHttpUrlRedirectClientError,
        aiohttp.RedirectClientError,
        aiohttp.ServerConnectionError,
        aiohttp.ServerDisconnectedError,
        aiohttp.TooManyRedirects,
        aiohttp.client_exceptions.UnixClientConnectorError,
        aiohttp.UploadAbortedError,
        aiohttp.WSServerHandshakeError,
    ],
)
AIOHTTP_TIMEOUTS = covered_by(
    aiohttp.ServerTimeoutError,
    "a connect or socket-read timeout: the upstream is too slow",
    [aiohttp.ConnectionTimeoutError, aiohttp.SocketTimeoutError],
)
AIOHTTP_NEVER_SEEN: dict[type[BaseException], str] = {
    aiohttp.EofStream: "StreamReader's internal end-of-stream signal, caught inside aiohttp",
    aiohttp.WebSocketError: "websockets only: teegate opens none",
    aiohttp.WSMessageTypeError: "websockets only: teegate opens none",
}


def test_every_aiohttp_error_is_decided_for_requests() -> None:
    assert_all_decided(
        AIOHTTP, REQUEST_ERRORS, AIOHTTP_FAILURES | AIOHTTP_TIMEOUTS, AIOHTTP_NEVER_SEEN
    )


def test_every_aiohttp_error_is_decided_for_streams() -> None:
    fingerprint = covered_by(
        aiohttp.ClientError,
        "checked when the connection opens, so mid-stream it is only a broken stream",
        [aiohttp.ServerFingerprintMismatch],
    )
    covered = AIOHTTP_FAILURES | AIOHTTP_TIMEOUTS | fingerprint
    assert_all_decided(AIOHTTP, STREAM_ERRORS, covered, AIOHTTP_NEVER_SEEN)


@pytest.mark.parametrize(
    ("table", "raised", "error", "status", "code"),
    [
        (REQUEST_ERRORS, aiohttp.ServerTimeoutError, UpstreamTimeout, 504, "upstream_timeout"),
        (REQUEST_ERRORS, aiohttp.SocketTimeoutError, UpstreamTimeout, 504, "upstream_timeout"),
        (REQUEST_ERRORS, aiohttp.ConnectionTimeoutError, UpstreamTimeout, 504, "upstream_timeout"),
        (REQUEST_ERRORS, asyncio.TimeoutError, UpstreamTimeout, 504, "upstream_timeout"),
        (
            REQUEST_ERRORS,
            aiohttp.ServerFingerprintMismatch,
            UpstreamKeyChanged,
            502,
            "upstream_error",
        ),
        (
            REQUEST_ERRORS,
            aiohttp.ClientConnectorCertificateError,
            UpstreamError,
            502,
            "upstream_error",
        ),
        (REQUEST_ERRORS, aiohttp.ServerDisconnectedError, UpstreamError, 502, "upstream_error"),
        (REQUEST_ERRORS, aiohttp.InvalidURL, UpstreamError, 502, "upstream_error"),
        (STREAM_ERRORS, aiohttp.SocketTimeoutError, UpstreamTimeout, 504, "upstream_timeout"),
        (STREAM_ERRORS, TimeoutError, UpstreamTimeout, 504, "upstream_timeout"),
        (STREAM_ERRORS, aiohttp.ServerFingerprintMismatch, UpstreamError, 502, "upstream_error"),
        (STREAM_ERRORS, aiohttp.ClientPayloadError, UpstreamError, 502, "upstream_error"),
        (STREAM_ERRORS, SSEError, UpstreamError, 502, "upstream_error"),
        (STREAM_ERRORS, ValueError, UpstreamError, 502, "upstream_error"),
    ],
)
def test_upstream_errors_map_to_their_status_and_code(
    table: Mapping[type[BaseException], type[TeegateError]],
    raised: type[BaseException],
    error: type[TeegateError],
    status: int,
    code: str,
) -> None:
    assert map_error(raised, table) is error
    assert (error.status, error.code) == (status, code)


@pytest.mark.parametrize(
    "raised", [OSError, ConnectionResetError, ssl.SSLError, RuntimeError, asyncio.CancelledError]
)
def test_upstream_errors_aiohttp_does_not_raise_propagate(raised: type[BaseException]) -> None:
    # aiohttp wraps socket and TLS errors (ClientOSError, ClientSSLError): a raw one is a bug.
    assert map_error(raised, REQUEST_ERRORS) is None


# --- sqlite3, SQLAlchemy and asyncpg: the store -----------------------------------

STATEMENT = "one statement or its use failed (a bug, a constraint): the database is fine"


def test_every_sqlite3_error_is_decided() -> None:
    # aiosqlite re-raises sqlite3's own classes: it defines none.
    covered = covered_by(
        sqlite3.Error,
        STATEMENT,
        [
            sqlite3.DataError,
            sqlite3.DatabaseError,
            sqlite3.IntegrityError,
            sqlite3.InternalError,
            sqlite3.NotSupportedError,
            sqlite3.ProgrammingError,
        ],
    )
    never_seen: dict[type[BaseException], str] = {
        sqlite3.Warning: "defined by DB-API 2.0; the sqlite3 module never raises it"
    }
    assert_all_decided(exception_classes(sqlite3), OUTAGE_VERDICTS, covered, never_seen)


def test_every_sqlalchemy_error_is_decided() -> None:
    covered = covered_by(
        sa_exc.SQLAlchemyError,
        STATEMENT + " (SQLAlchemy raised it before reaching the driver)",
        [
            sa_exc.AmbiguousColumnError,
            sa_exc.AmbiguousForeignKeysError,
            sa_exc.ArgumentError,
            sa_exc.AwaitRequired,
            sa_exc.CircularDependencyError,
            sa_exc.CompileError,
            sa_exc.ConstraintColumnNotFoundError,
            sa_exc.DuplicateColumnError,
            sa_exc.IdentifierError,
            sa_exc.IllegalStateChangeError,
            sa_exc.InvalidRequestError,
            sa_exc.MissingGreenlet,
            sa_exc.MultipleResultsFound,
            sa_exc.NoDBAPILoaded,
            sa_exc.NoForeignKeysError,
            sa_exc.NoInspectionAvailable,
            sa_exc.NoReferenceError,
            sa_exc.NoReferencedColumnError,
            sa_exc.NoReferencedTableError,
            sa_exc.NoResultFound,
            sa_exc.NoSuchColumnError,
            sa_exc.NoSuchModuleError,
            sa_exc.NoSuchTableError,
            sa_exc.ObjectNotExecutableError,
            sa_exc.PendingRollbackError,
            sa_exc.ResourceClosedError,
            sa_exc.StatementError,
            sa_exc.UnboundExecutionError,
            sa_exc.UnreflectableTableError,
            sa_exc.UnsupportedCompilationError,
            # Raised inside the pool (it reconnects).
            sa_exc.DisconnectionError,
            sa_exc.InvalidatePoolError,
            # The asyncio engine used out of order: a bug.
            sa_async_exc.AsyncBindNotFound,
            sa_async_exc.AsyncContextAlreadyStarted,
            sa_async_exc.AsyncContextNotStarted,
            sa_async_exc.AsyncMethodRequired,
        ],
    ) | covered_by(
        sa_exc.DBAPIError,
        "a driver error: an outage only if SQLAlchemy invalidated the connection",
        [
            sa_exc.DataError,
            sa_exc.DatabaseError,
            sa_exc.IntegrityError,
            sa_exc.InternalError,
            sa_exc.NotSupportedError,
            sa_exc.ProgrammingError,
        ],
    )
    never_seen: dict[type[BaseException], str] = {
        sa_exc.EmulatedDBAPIException: "a base for dialects' own DB-API shims"
    }
    classes = exception_classes(sa_exc, sa_async_exc)
    assert_all_decided(classes, OUTAGE_VERDICTS, covered, never_seen)


OUTAGE_SQLSTATES = {"53300", "57014", "57P01", "57P02", "57P03"}
"""Besides class 08 (connection exception): too many connections, a statement
cancelled (past the statement timeout), admin and crash shutdown, cannot connect now."""


class DriverError(Exception):
    """A driver's error as SQLAlchemy's asyncpg adapter hands it on: with its SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("code", "outage"), [("57P03", True), ("08006", True), ("53300", True), ("42P01", False)]
)
def test_a_wrapped_driver_error_is_an_outage_by_its_sqlstate(code: str, outage: bool) -> None:
    """A connection refused while PostgreSQL shuts down reaches the ledger writer as a
    bare DBAPIError with nothing invalidated (found by tests/faults: it was a 500)."""
    wrapped = sa_exc.DBAPIError(
        None, None, DriverError("the database system is shutting down", code)
    )
    assert is_outage(wrapped) is outage


def test_every_asyncpg_error_is_decided() -> None:
    table = asyncpg_outage_verdicts()
    classes = exception_classes(asyncpg.exceptions, asyncpg.exceptions._base)
    server = {cls for cls in classes if issubclass(cls, asyncpg.PostgresError)}
    for cls in server:  # one class per SQLSTATE: decided by its code
        code = getattr(cls, "sqlstate", None) or ""
        outage = code.startswith("08") or code in OUTAGE_SQLSTATES
        expected = OutageVerdict.OUTAGE if outage else OutageVerdict.STATEMENT
        assert map_error(cls, table) is expected, f"{cls.__name__} ({code})"
    covered = covered_by(
        asyncpg.InterfaceError,
        "the client side of the connection failed (closed, unusable)",
        [
            asyncpg.exceptions.ClientConfigurationError,
            asyncpg.exceptions._base.DataError,
            asyncpg.exceptions.UnsupportedClientFeatureError,
            asyncpg.exceptions.UnsupportedServerFeatureError,
        ],
    ) | covered_by(
        asyncpg.exceptions.InternalClientError,
        "asyncpg's own protocol state: a bug, not the database's",
        [
            asyncpg.exceptions.OutdatedSchemaCacheError,
            asyncpg.exceptions.ProtocolError,
            asyncpg.exceptions.TargetServerAttributeNotMatched,
        ],
    )
    assert_all_decided(classes - server, table, covered)


@pytest.mark.parametrize(
    ("raised", "verdict"),
    [
        (TimeoutError, OutageVerdict.OUTAGE),
        (ServiceUnavailable, OutageVerdict.OUTAGE),
        (sqlite3.OperationalError, OutageVerdict.OUTAGE),
        (sqlite3.IntegrityError, OutageVerdict.STATEMENT),
        (sa_exc.OperationalError, OutageVerdict.UNLESS_RETRYABLE),
        (sa_exc.IntegrityError, OutageVerdict.IF_INVALIDATED),
        (sa_exc.TimeoutError, OutageVerdict.OUTAGE),  # the pool's checkout timed out: 503
    ],
)
def test_database_errors_map_to_their_verdict(
    raised: type[BaseException], verdict: OutageVerdict
) -> None:
    assert map_error(raised, OUTAGE_VERDICTS) is verdict


def test_the_verdicts_decide_service_unavailable() -> None:
    def wrapped(cls: type[sa_exc.DBAPIError], sqlstate: str, invalidated: bool) -> BaseException:
        orig = Exception("driver")
        orig.sqlstate = sqlstate  # type: ignore[attr-defined]
        return cls("SELECT 1", None, orig, connection_invalidated=invalidated)

    assert is_outage(wrapped(sa_exc.OperationalError, "08006", invalidated=False))
    assert not is_outage(wrapped(sa_exc.OperationalError, "40001", invalidated=False))
    assert is_outage(wrapped(sa_exc.OperationalError, "40001", invalidated=True))
    assert is_outage(wrapped(sa_exc.IntegrityError, "23505", invalidated=True))
    assert not is_outage(wrapped(sa_exc.IntegrityError, "23505", invalidated=False))
    assert is_outage(asyncpg.TooManyConnectionsError("too many"))
    assert not is_outage(asyncpg.exceptions.IdleSessionTimeoutError("idle"))
    assert not is_outage(RuntimeError("a bug"))
    assert ServiceUnavailable.status == 503
    assert ServiceUnavailable.code == "service_unavailable"


# --- redis-py: the rate limiter ---------------------------------------------------


def test_every_redis_error_is_decided() -> None:
    covered = covered_by(
        redis.exceptions.RedisError,
        "Redis is unreachable, slow, full or refusing: enforce the bounded local limit",
        [
            redis.exceptions.AskError,
            redis.exceptions.AuthenticationError,
            redis.exceptions.AuthenticationWrongNumberOfArgsError,
            redis.exceptions.AuthorizationError,
            redis.exceptions.BusyLoadingError,
            redis.exceptions.ClusterCrossSlotError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.ClusterError,
            redis.exceptions.ConnectionError,
            redis.exceptions.DataError,
            redis.exceptions.ExecAbortError,
            redis.exceptions.ExternalAuthProviderError,
            redis.exceptions.InvalidResponse,
            redis.exceptions.LockError,
            redis.exceptions.LockNotOwnedError,
            redis.exceptions.MasterDownError,
            redis.exceptions.MaxConnectionsError,
            redis.exceptions.ModuleError,
            redis.exceptions.MovedError,
            redis.exceptions.NoPermissionError,
            redis.exceptions.NoScriptError,
            redis.exceptions.NoSuchFieldsetError,
            redis.exceptions.OutOfMemoryError,
            redis.exceptions.PubSubError,
            redis.exceptions.ReadOnlyError,
            redis.exceptions.ResponseError,
            redis.exceptions.TryAgainError,
            redis.exceptions.WatchError,
        ],
    )
    cluster_only = "Redis Cluster clients only: the limiter talks to one Redis"
    never_seen: dict[type[BaseException], str] = {
        redis.exceptions.ChildDeadlockedError: "the sync client after a fork: never in asyncio",
        redis.exceptions.CrossSlotTransactionError: cluster_only,
        redis.exceptions.IncorrectPolicyType: cluster_only,
        redis.exceptions.InvalidPipelineStack: cluster_only,
        redis.exceptions.RedisClusterException: cluster_only,
        redis.exceptions.SlotNotCoveredError: cluster_only,
    }
    assert_all_decided(exception_classes(redis.exceptions), DEGRADE_ON, covered, never_seen)


@pytest.mark.parametrize(
    ("raised", "verdict"),
    [
        (redis.exceptions.TimeoutError, "degrade_if_lasting"),
        (redis.exceptions.ConnectionError, "degrade"),
        (redis.exceptions.ResponseError, "degrade"),
        (ConnectionRefusedError, "degrade"),
        (TimeoutError, "degrade_if_lasting"),
        (RuntimeError, None),
        (asyncio.CancelledError, None),
    ],
)
def test_redis_errors_map_to_their_verdict(
    raised: type[BaseException], verdict: str | None
) -> None:
    assert map_error(raised, DEGRADE_ON) == verdict


# --- dcap-qvl, PyJWT, cryptography, aiohttp: attestation --------------------------


class PanicException(BaseException):
    """Stands in for pyo3_runtime.PanicException, which exists only once Rust panics."""


FAILS_CLOSED = "a verifier refused or choked on the evidence: refuse it, never trust it"


def test_every_verifying_dependency_error_is_decided() -> None:
    classes = exception_classes(jwt.exceptions, cryptography.exceptions, dcap_qvl)
    classes |= {ValueError, PanicException}  # dcap-qvl raises ValueError; pyo3 panics
    covered = covered_by(Exception, FAILS_CLOSED, classes - {PanicException})
    covered[PanicException] = (BaseException, FAILS_CLOSED)
    assert_all_decided(classes, FAIL_CLOSED, covered)
    assert all(map_error(cls, FAIL_CLOSED) == "reject" for cls in classes)


@pytest.mark.parametrize(
    "raised", [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError]
)
def test_the_interpreter_s_signals_are_never_rejections(raised: type[BaseException]) -> None:
    assert map_error(raised, FAIL_CLOSED) == "raise"


def test_every_evidence_fetch_error_is_decided() -> None:
    covered = (
        AIOHTTP_FAILURES
        | covered_by(
            aiohttp.ClientError,
            "a timeout or a key other than the one pinned: the service is unavailable for now",
            [aiohttp.ServerTimeoutError, aiohttp.ServerFingerprintMismatch],
        )
        | covered_by(
            aiohttp.ClientError,
            "aiohttp's connect or read timeout",
            [aiohttp.ConnectionTimeoutError, aiohttp.SocketTimeoutError],
        )
        | covered_by(
            ssl.SSLError,
            "a TLS failure aiohttp did not wrap",
            exception_classes(ssl) - {ssl.SSLError},
        )
    )
    classes = AIOHTTP | exception_classes(ssl)
    assert_all_decided(classes, UNAVAILABLE_ON, covered, AIOHTTP_NEVER_SEEN)
    assert map_error(ConnectionRefusedError, UNAVAILABLE_ON) == "unavailable"
    assert map_error(AttestationFailed, UNAVAILABLE_ON) is None
    assert map_error(KeyError, UNAVAILABLE_ON) is None


# --- stripe: the payment edge -----------------------------------------------------


def test_every_stripe_error_is_decided() -> None:
    """A webhook whose signature does not verify is refused; any other error of a
    Stripe call (unreachable, refused, limited, OAuth) means payments are unavailable."""
    classes = exception_classes(stripe._error, stripe.oauth_error)
    covered = covered_by(
        stripe.StripeError,
        "a Stripe API call failed: top-ups are unavailable for now",
        classes - {stripe.StripeError, stripe.SignatureVerificationError},
    )
    assert_all_decided(classes, STRIPE_ERRORS, covered)
    assert map_error(stripe.SignatureVerificationError, STRIPE_ERRORS) is WebhookRejected
    assert map_error(stripe.APIConnectionError, STRIPE_ERRORS) is ServiceUnavailable
