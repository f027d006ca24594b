"""The OpenAI error envelope the simulated upstream answers with.

The devstack plays a third-party upstream, not the gateway, so it answers with
OpenAI's own four-field envelope (no `status`), exactly what the gateway's
upstream client has to parse in production. The envelope is built by
`teegate.errors.error_envelope`, the gateway's own builder, without the status.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from teegate.errors import error_envelope

MAX_BODY_BYTES = 8 * 1024 * 1024


class DevstackHttpError(Exception):
    """An error answer: status plus the envelope's type, code and param."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, type_=self.type, code=self.code, param=self.param)

    def response(self) -> Response:
        return json_response(self.envelope(), status=self.status)


def json_response(payload: Any, *, status: int = 200) -> Response:
    """A JSON response serialised with orjson (Starlette's JSONResponse uses json)."""
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def invalid_request(
    message: str, *, param: str | None, code: str = "invalid_value"
) -> DevstackHttpError:
    return DevstackHttpError(400, message, code=code, param=param)


def invalid_api_key() -> DevstackHttpError:
    return DevstackHttpError(401, "Incorrect API key provided.", code="invalid_api_key")


def model_not_found(model: str) -> DevstackHttpError:
    return DevstackHttpError(
        404,
        f"The model '{model}' does not exist.",
        code="model_not_found",
        param="model",
    )


def body_too_large() -> DevstackHttpError:
    return DevstackHttpError(
        413, f"Request body over {MAX_BODY_BYTES} bytes.", code="request_too_large"
    )


def simulated_server_error() -> DevstackHttpError:
    return DevstackHttpError(
        500,
        "The server had an error while processing your request (devstack fault http-500).",
        type_="server_error",
        code="internal_error",
    )


def service_unavailable(what: str, fault: str) -> DevstackHttpError:
    return DevstackHttpError(
        503,
        f"{what} is unavailable (devstack fault {fault}).",
        type_="server_error",
        code="service_unavailable",
    )


async def _devstack_error(_request: Request, exc: Exception) -> Response:
    if not isinstance(exc, DevstackHttpError):
        raise exc
    return exc.response()


async def _http_exception(_request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods also answer in the OpenAI envelope."""
    if not isinstance(exc, HTTPException):
        raise exc
    error = DevstackHttpError(exc.status_code, exc.detail, code=None)
    response = error.response()
    response.headers.update(exc.headers or {})
    return response


EXCEPTION_HANDLERS: Any = {DevstackHttpError: _devstack_error, HTTPException: _http_exception}
"""Starlette exception handlers for every devstack app: errors in the OpenAI envelope."""
