"""Every error teegate can answer with, and the one place the OpenAI envelope is built.

    TeegateError                      the API errors: each knows its status, type and code
    ├── InvalidRequest                400 invalid_request_error (specific code, param)
    │   ├── RequestTooLarge           413 request_too_large
    │   ├── UnsupportedCapability     400 unsupported_capability (tools, formats, media parts)
    │   └── ModelNotConfidential      400 model_not_confidential
    ├── InvalidApiKey                 401 invalid_api_key
    ├── InsufficientBalance           402 insufficient_balance
    ├── NotFound                      404 not_found (routes, generations)
    │   └── ModelNotFound             404 model_not_found
    ├── MethodNotAllowed              405 method_not_allowed
    ├── RateLimitExceeded             429 rate_limit_exceeded (+ Retry-After)
    ├── ClientClosedRequest           499 client_closed_request (logged, never received)
    ├── InternalError                 500 internal_error
    ├── UpstreamError                 502 upstream_error
    │   └── UpstreamKeyChanged        the pinned TLS key was not presented: the gate
    │                                 answers ModelNotConfidential and re-attests
    ├── NotAvailable                  503 not_available (unsupported modality)
    ├── ServiceUnavailable            503 service_unavailable (a dependency is down)
    └── UpstreamTimeout               504 upstream_timeout

    AttestationFailed                 a domain verdict, never sent as is: the gate turns
                                      it into ModelNotConfidential
    ConfigError                       a bad setting, refused at start-up

Messages never contain prompt or completion text: only ids, field names and limits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class TeegateError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.error_code,
                "param": self.param,
                "status": self.status,
            }
        }

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


class UnsupportedCapability(InvalidRequest):
    code = "unsupported_capability"


class ModelNotConfidential(InvalidRequest):
    code = "model_not_confidential"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class InvalidApiKey(TeegateError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class InsufficientBalance(TeegateError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_balance"


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


class RateLimitExceeded(TeegateError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

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


class AttestationFailed(Exception):
    """Evidence did not prove what it must; `check` names the check that failed."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(f"{check}: {reason}")
        self.check = check
        self.reason = reason


class ConfigError(Exception):
    """A setting is invalid; the message names the field."""
