"""GET /v1/models and /v1/models/{id}: exactly what the gate accepts right now."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import json_response
from teegate.api._state import authorize, gateway
from teegate.catalog import describe_servable, list_servable
from teegate.errors import ModelNotFound


async def list_models(request: Request) -> Response:
    """A key with a policy sees only the models it may use, on upstreams it accepts."""
    policy = (await authorize(request)).policy
    gw = gateway(request)
    if policy is None:
        data = list_servable(gw.catalog, gw.attestation)
    else:
        data = list_servable(
            gw.catalog, gw.attestation, allows=policy.allows, floor=policy.attestation
        )
    return json_response({"object": "list", "data": data}, headers=request.state.ratelimit_headers)


async def retrieve_model(request: Request) -> Response:
    policy = (await authorize(request)).policy
    gw = gateway(request)
    model_id: str = request.path_params["model_id"]
    if policy is not None and not policy.allows(model_id):
        raise ModelNotFound(model_id)  # as the list does not show it
    floor = policy.attestation if policy is not None else None
    described = describe_servable(gw.catalog, gw.attestation, model_id, floor)
    if described is None:
        raise ModelNotFound(model_id)
    return json_response(described, headers=request.state.ratelimit_headers)
