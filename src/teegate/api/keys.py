"""GET /v1/key: the caller's own key, its limits and policy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import json_response
from teegate.api._state import authorize, gateway
from teegate.apikeys import describe_key


async def get_key(request: Request) -> Response:
    principal = await authorize(request)
    described = describe_key(principal, gateway(request).settings.default_rpm)
    return json_response({"data": described}, headers=request.state.ratelimit_headers)
