"""Response shaping: orjson bodies, the error envelope and the headers every answer carries."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from teegate.errors import TeegateError

JSON = "application/json"


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def error_response(request: Request, exc: TeegateError) -> Response:
    headers = dict(getattr(request.state, "ratelimit_headers", None) or {})
    headers.update(exc.headers())
    return Response(exc.body(), status_code=exc.status, media_type=JSON, headers=headers)
