"""GET /v1/attestation/report: the evidence behind a model's current verdict; and
GET /v1/attestation/gateway: the gateway's own quote, binding its receipt key."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import json_response
from teegate.api._state import Gateway, authorize, gateway
from teegate.errors import InvalidRequest, ModelNotFound, RateLimitExceeded

FRESH_LIMIT_SUFFIX = "#attest"
"""The limiter key of a key's fresh attestations: its id plus this (ids have no '#')."""
NONCE_HEX = re.compile(r"[0-9a-fA-F]{64}")
VERIFY_DOC = "docs/attestation.md"


async def attestation_report(request: Request) -> Response:
    principal = await authorize(request)
    gw = gateway(request)
    model_id = request.query_params.get("model")
    if not model_id:
        raise InvalidRequest(
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    nonce = _nonce(request.query_params.get("nonce"))
    offers = gw.catalog.servable(model_id)
    if not offers:
        raise ModelNotFound(model_id)
    if nonce is not None:
        await _count_fresh_attestation(gw, principal.key_id)
    upstreams = []
    for offer in offers:
        status = gw.attestation.status(offer)
        upstreams.append(
            {
                "upstream": offer.upstream,
                "chute_id": offer.chute_id,
                "mode": status.mode,
                "channel": status.channel or None,
                "passed": status.passed,
                "reason": status.reason or None,
                "verdicts": await gw.attestation.reports(offer, nonce),
            }
        )
    body = {
        "object": "attestation.report",
        "model": model_id,
        "nonce": nonce.hex() if nonce else None,
        "upstreams": upstreams,
        "how_to_verify": VERIFY_DOC,
    }
    return json_response(body, headers=request.state.ratelimit_headers)


async def _count_fresh_attestation(gw: Gateway, key_id: str) -> None:
    """A client's nonce costs a full attestation (upstream, PCS, NVIDIA's service):
    its own small per-key limit, apart from the request limit."""
    limit = gw.settings.attestation.report_nonce_per_minute
    decision = await gw.limiter.hit(key_id + FRESH_LIMIT_SUFFIX, limit)
    if not decision.allowed:
        raise RateLimitExceeded(
            f"Rate limit reached: {limit} fresh attestations (reports with a nonce) per "
            f"minute for this key. Ask without a nonce for the evidence of the current "
            f"verdict, or retry after {decision.retry_after_s} seconds.",
            retry_after_s=decision.retry_after_s,
        )


def _nonce(value: str | None) -> bytes | None:
    if value is None:
        return None
    if not NONCE_HEX.fullmatch(value):  # `$` would let a trailing newline in
        raise InvalidRequest(
            "'nonce' must be 64 hexadecimal characters (32 random bytes).",
            param="nonce",
            code="invalid_value",
        )
    return bytes.fromhex(value)


async def gateway_attestation(request: Request) -> Response:
    """Public, like the transparency log: anyone may check which key the gateway signs with."""
    nonce = _nonce(request.query_params.get("nonce"))
    if nonce is None:
        raise InvalidRequest(
            "Missing required parameter: 'nonce' (64 hexadecimal characters).",
            param="nonce",
            code="missing_required_parameter",
        )
    return json_response(await gateway(request).receipts.gateway_evidence(nonce))
