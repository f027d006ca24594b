"""GET /v1/receipts/{id} (the owning account only) and the transparency log:
/v1/transparency/sth, /proof, /consistency, /leaves, and each logged verdict as an
EAR JWT at /v1/transparency/ear (public: anyone may audit)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import json_response
from teegate.api._state import authorize, gateway
from teegate.errors import InvalidRequest


async def get_receipt(request: Request) -> Response:
    principal = await authorize(request)
    receipt = await gateway(request).receipts.receipt_for(
        request.path_params["receipt_id"], principal.account_id
    )
    return json_response(receipt, headers=request.state.ratelimit_headers)


async def tree_head(request: Request) -> Response:
    return json_response(await gateway(request).receipts.log.tree_head())


async def inclusion_proof(request: Request) -> Response:
    leaf = _required(request, "leaf")
    proof = await gateway(request).receipts.log.inclusion(leaf, _optional(request, "tree_size"))
    return json_response(proof)


async def consistency_proof(request: Request) -> Response:
    first = _required(request, "from")
    proof = await gateway(request).receipts.log.consistency(first, _optional(request, "to"))
    return json_response(proof)


async def attestation_result(request: Request) -> Response:
    """A logged verdict as an IETF RATS EAR JWT (public, as the log is)."""
    leaf = _required(request, "leaf")
    return json_response(await gateway(request).receipts.log.attestation_result(leaf))


async def leaves(request: Request) -> Response:
    start, end = _required(request, "start"), _required(request, "end")
    return json_response(await gateway(request).receipts.log.leaves(start, end))


def _required(request: Request, name: str) -> int:
    value = _optional(request, name)
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )
    return value


def _optional(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidRequest(f"'{name}' must be a non-negative integer.", param=name)
    return int(raw)
