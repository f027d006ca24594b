"""Every failure answers in the OpenAI error envelope, unknown routes included."""

from __future__ import annotations

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import error_response
from teegate.api._state import gateway
from teegate.errors import (
    InternalError,
    MethodNotAllowed,
    NotFound,
    RateLimitExceeded,
    TeegateError,
)

log = structlog.get_logger("teegate.errors")


async def on_teegate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TeegateError)
    if isinstance(exc, RateLimitExceeded):  # raised by routes only: the gateway is running
        gateway(request).metrics.count_refusal(exc.limit)
    return error_response(request, exc)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error: TeegateError = MethodNotAllowed(
            f"Method {request.method} is not allowed on {request.url.path}."
        )
    elif exc.status_code == 404:
        error = NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
    else:
        error = InternalError(f"HTTP {exc.status_code}")
    response = error_response(request, error)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error(
        "unhandled_error",
        request_id=getattr(request.state, "request_id", None),
        error=type(exc).__name__,
    )
    return error_response(request, InternalError("The gateway failed to handle the request."))
