"""Every exception teegate raises, and the one place the OpenAI error envelope is built.

    TeegateException                  the root: every exception teegate defines
    ├── TeegateError                  an API error: each knows its status, type and code
    │   ├── InvalidRequest            400 invalid_request_error (specific code, param)
    │   │   ├── RequestTooLarge       413 request_too_large
    │   │   ├── RequestTimeout        408 request_timeout (headers or body sent too slowly)
    │   │   ├── TargetTooLong         414 uri_too_long
    │   │   ├── HeadersTooLarge       431 request_header_fields_too_large
    │   │   ├── UnsupportedCapability 400 unsupported_capability (tools, formats, media parts)
    │   │   ├── UpstreamRejected      400: the upstream refused the request as invalid
    │   │   │                         (its 400/422), with its reason if it repeats no prompt
    │   │   ├── ModelNotConfidential  400 model_not_confidential
    │   │   ├── E2eeRequired          400 e2ee_required (the operator requires EHBP)
    │   │   └── WebhookRejected       400 webhook_rejected (a payment event its signature
    │   │                             does not cover)
    │   ├── InvalidApiKey             401 invalid_api_key
    │   ├── InvalidAdminToken         401 invalid_admin_token (/admin/v1, operator endpoints)
    │   ├── InsufficientBalance       402 insufficient_balance
    │   ├── BudgetExceeded            402 budget_exceeded (a key's or account's spend budget)
    │   ├── ModelNotAllowed           403 model_not_allowed (outside the key's allow-list)
    │   ├── NotFound                  404 not_found (routes, generations)
    │   │   └── ModelNotFound         404 model_not_found
    │   ├── MethodNotAllowed          405 method_not_allowed
    │   ├── IdempotencyConflict       409 idempotency_key_in_use (its first request runs),
    │   │                             idempotency_key_used (it has finished)
    │   ├── IdempotencyKeyReused      422 idempotency_key_reused (with another body)
    │   ├── Conflict                  409 conflict (an account name the admin API reuses)
    │   ├── RateLimitExceeded         429 rate_limit_exceeded (+ Retry-After)
    │   ├── ClientClosedRequest       499 client_closed_request (logged, never received)
    │   ├── InternalError             500 internal_error
    │   ├── UpstreamError             502 upstream_error
    │   │   └── UpstreamKeyChanged    the pinned TLS key was not presented: the gate
    │   │                             answers ModelNotConfidential and re-attests
    │   ├── NotAvailable              503 not_available (unsupported modality)
    │   ├── ServiceUnavailable        503 service_unavailable (a dependency is down)
    │   └── UpstreamTimeout           504 upstream_timeout
    └── DomainError                   never answered as is: the layer that catches it
        │                             decides what the client sees (if anything)
        ├── AttestationFailed         a verdict: the gate answers ModelNotConfidential
        ├── CatalogEntryError         an upstream catalog entry the gate cannot read
        ├── ConfigError               a bad setting, refused at start-up
        ├── EnclaveNotVerified        teegate.client: the enclave's attestation did not
        │                             verify, so nothing was encrypted or sent
        ├── InvariantViolation        a bug: state the code's own rules rule out
        ├── MoneyError                a bug: a float or an inexact amount on the money path
        ├── PolicyError               a key policy malformed or looser than the gateway's
        ├── SSEError                  an upstream stream the gate cannot decode
        ├── StoreConflict             a name or reference that must be unique exists
        └── StoreNotFound             an account or key the admin named does not exist

A DomainError keeps the builtin base callers may catch it by (ValueError,
LookupError, RuntimeError). Errors raised by dependencies are mapped at each
boundary by one table, looked up with `map_error` so the most specific entry wins:
`upstream.REQUEST_ERRORS` and `STREAM_ERRORS` (aiohttp), `store.OUTAGE_VERDICTS`
(sqlite3, SQLAlchemy, asyncpg), `ratelimit.DEGRADE_ON` (redis-py),
`attestation.FAIL_CLOSED` (dcap-qvl, PyJWT, cryptography) and
`attestation.UNAVAILABLE_ON` (aiohttp, for evidence), `payments.STRIPE_ERRORS`
(stripe).
The devstack, which plays a third-party upstream, keeps its own errors but builds
its envelope with `error_envelope` too.

Messages never contain prompt or completion text: only ids, field names and limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import orjson

V = TypeVar("V")


def error_envelope(
    message: str, *, type_: str, code: str | None, param: str | None, status: int | None = None
) -> dict[str, Any]:
    """`{"error": {message, type, code, param[, status]}}`: OpenAI's envelope.

    teegate adds `status`; the devstack, playing an OpenAI-style upstream, leaves it out.
    """
    error: dict[str, Any] = {"message": message, "type": type_, "code": code, "param": param}
    if status is not None:
        error["status"] = status
    return {"error": error}


def map_error(exc_type: type[BaseException], table: Mapping[type[BaseException], V]) -> V | None:
    """What a boundary's `table` says about an error of `exc_type`: the entry of the
    nearest class in its MRO, so the most specific entry wins; None if none covers it."""
    for cls in exc_type.__mro__:
        if cls in table:
            return table[cls]
    return None


class TeegateException(Exception):
    """The root of every exception teegate defines."""


class TeegateError(TeegateException):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def envelope(self) -> dict[str, Any]:
        return error_envelope(
            self.message,
            type_=self.type,
            code=self.error_code,
            param=self.param,
            status=self.status,
        )

    @property
    def error_code(self) -> str:
        return self.code

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(TeegateError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param)
        self._code = code

    @property
    def error_code(self) -> str:
        return self._code or self.code


class RequestTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class RequestTimeout(InvalidRequest):
    status = 408
    code = "request_timeout"

    def headers(self) -> dict[str, str]:
        """The rest of a slow body is not waited for: the connection closes with the answer."""
        return {"connection": "close"}


class TargetTooLong(InvalidRequest):
    status = 414
    code = "uri_too_long"


class HeadersTooLarge(InvalidRequest):
    status = 431
    code = "request_header_fields_too_large"


class UnsupportedCapability(InvalidRequest):
    code = "unsupported_capability"


class WebhookRejected(InvalidRequest):
    code = "webhook_rejected"


class ModelNotConfidential(InvalidRequest):
    code = "model_not_confidential"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class UpstreamRejected(InvalidRequest):
    """The upstream answered 400/422: the request is the client's to fix, not a 502.

    `detail` holds the upstream's own (message, param, code) as it sent them; they
    stay out of the message until the chat layer has checked that the reason
    repeats no prompt text (`chat.upstream_refusal`).
    """

    code = "upstream_rejected"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        detail: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.detail = detail


class E2eeRequired(InvalidRequest):
    code = "e2ee_required"

    def __init__(self) -> None:
        super().__init__(
            "This gateway requires end-to-end encryption: send the request encrypted "
            "to the model's attested enclave (EHBP, the Ehbp-Encapsulated-Key header), "
            "e.g. with teegate.client.connect."
        )


class InvalidApiKey(TeegateError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class InvalidAdminToken(TeegateError):
    """The admin API and the operator endpoints take the admin token only: an API key,
    like no token at all, is refused."""

    status = 401
    type = "authentication_error"
    code = "invalid_admin_token"


class InsufficientBalance(TeegateError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_balance"


class BudgetExceeded(TeegateError):
    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"


class ModelNotAllowed(TeegateError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"This API key may not use the model '{model}' (it is outside the key's "
            "model allow-list).",
            param="model",
        )


class NotFound(TeegateError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist.", param="model")


class MethodNotAllowed(TeegateError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class IdempotencyConflict(TeegateError):
    """A retry whose Idempotency-Key a request of the same body already used: it is
    neither held nor charged again. Completions are never stored, so none is replayed."""

    status = 409
    type = "invalid_request_error"
    code = "idempotency_key_in_use"

    def __init__(self, message: str, *, finished: bool) -> None:
        super().__init__(message, param="Idempotency-Key")
        self.finished = finished

    @property
    def error_code(self) -> str:
        return "idempotency_key_used" if self.finished else self.code


class IdempotencyKeyReused(TeegateError):
    status = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class Conflict(TeegateError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimitExceeded(TeegateError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int, limit: str = "requests") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit = limit
        """Which limit refused: "requests" (per minute) or "tokens" (per minute)."""

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ClientClosedRequest(TeegateError):
    """The client left before its answer was ready. Nobody receives it: its status,
    nginx's 499, is what the access log and metrics record, so a client's timeout is
    not counted as an upstream failure."""

    status = 499
    type = "api_error"
    code = "client_closed_request"


class InternalError(TeegateError):
    pass


class UpstreamError(TeegateError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamKeyChanged(UpstreamError):
    """The upstream presented a TLS key other than the one its attestation bound."""


class NotAvailable(TeegateError):
    status = 503
    type = "invalid_request_error"
    code = "not_available"

    def headers(self) -> dict[str, str]:
        """The official SDKs retry a 503 unless told not to; asking again cannot help."""
        return {"x-should-retry": "false"}


class ServiceUnavailable(TeegateError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class UpstreamTimeout(TeegateError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


class DomainError(TeegateException):
    """Raised and caught inside teegate; never answered to a client as is."""


class AttestationFailed(DomainError):
    """Evidence did not prove what it must; `check` names the check that failed."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(f"{check}: {reason}")
        self.check = check
        self.reason = reason


class CatalogEntryError(DomainError, ValueError):
    """An upstream's catalog entry is malformed: that model is skipped, not served."""


class ConfigError(DomainError):
    """A setting is invalid; the message names the field."""


class EnclaveNotVerified(DomainError, RuntimeError):
    """Raised by `teegate.client` to its caller, before any request is sent."""


class InvariantViolation(DomainError, RuntimeError):
    """State that the code's own rules say cannot exist: a bug, never a user error."""


class MoneyError(DomainError, ValueError):
    """A float, a bool or an inexact amount reached the money path."""


class PolicyError(DomainError, ValueError):
    """A key's policy is malformed, or asks for what the gateway itself would not accept."""


class SSEError(DomainError, ValueError):
    """An upstream's event stream cannot be decoded (an event over the size limit)."""


class StoreConflict(DomainError, ValueError):
    """A name or reference that must be unique already exists."""


class StoreNotFound(DomainError, LookupError):
    """The account or key named does not exist."""
