"""GET /v1/key: the caller's own key, its limits and policy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import json_response
from teegate.api._state import authorize, gateway
from teegate.apikeys import describe_key
from teegate.billing import describe_budget


async def get_key(request: Request) -> Response:
    """With the key's and its account's spend budgets: limit, spent, held and left."""
    principal = await authorize(request)
    gw = gateway(request)
    described = describe_key(principal, gw.settings.default_rpm)
    budgets = await gw.billing.budgets(principal.account_id, principal.key_id)
    described["budgets"] = [describe_budget(budget) for budget in budgets]
    return json_response({"data": described}, headers=request.state.ratelimit_headers)
