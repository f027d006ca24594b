"""GET /v1/balance, /v1/usage and /v1/generation: a client's own account, nothing else.

Money is answered as decimal USD strings, never as JSON numbers (floats).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import json_response
from teegate.api._state import authorize, gateway
from teegate.billing import MAX_USAGE_PAGE, describe_balance, describe_generation, parse_since
from teegate.errors import InvalidRequest, NotFound

DEFAULT_USAGE_PAGE = 100
LIMIT_DIGITS = re.compile(r"[0-9]{1,9}")


async def get_balance(request: Request) -> Response:
    principal = await authorize(request)
    balance = await gateway(request).billing.balance(principal.account_id)
    return json_response(describe_balance(balance), headers=request.state.ratelimit_headers)


async def list_usage(request: Request) -> Response:
    """Newest first; `since` (ISO date or date-time) and `limit` narrow the page."""
    principal = await authorize(request)
    since_ms = _since(request.query_params.get("since"))
    limit = _limit(request.query_params.get("limit"))
    records = await gateway(request).billing.usage(
        principal.account_id, since_ms=since_ms, limit=limit
    )
    data = [describe_generation(r) for r in records]
    return json_response({"object": "list", "data": data}, headers=request.state.ratelimit_headers)


async def get_generation(request: Request) -> Response:
    """One request's tokens and cost by its id (the X-Request-Id of its completion)."""
    principal = await authorize(request)
    request_id = request.query_params.get("id")
    if not request_id:
        raise InvalidRequest(
            "Missing required parameter: 'id'.", param="id", code="missing_required_parameter"
        )
    record = await gateway(request).billing.generation(principal.account_id, request_id)
    if record is None:
        raise NotFound(
            f"No settled generation '{request_id[:64]}' for this account "
            "(a request still running is not settled yet).",
            param="id",
        )
    return json_response(
        {"data": describe_generation(record)}, headers=request.state.ratelimit_headers
    )


def _since(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since", code="invalid_value") from exc


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_USAGE_PAGE
    # ASCII digits only, few of them: str.isdigit takes '²' and int() refuses it,
    # and int() refuses more than 4300 digits.
    if not LIMIT_DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_USAGE_PAGE:
        raise InvalidRequest(
            f"'limit' must be an integer between 1 and {MAX_USAGE_PAGE}.",
            param="limit",
            code="invalid_value",
        )
    return int(text)
