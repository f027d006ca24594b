"""POST /v1/embeddings: closed until a confidential embedding model is attested; then
parse, call the embeddings service, send its answer."""

from __future__ import annotations

from starlette.requests import Request

from teegate.api._answer import AnswerResponse
from teegate.api._body import idempotency_of, read_json_body
from teegate.api._disconnect import unless_client_leaves
from teegate.api._state import authorize, gateway, receipt_policy
from teegate.api.unavailable import closed
from teegate.embeddings import parse_embeddings_request


async def create_embeddings(request: Request) -> AnswerResponse:
    gw = gateway(request)
    principal = await authorize(request)
    if not gw.embeddings.is_open():
        raise closed(request.url.path)
    raw = await read_json_body(request, gw.settings.max_body_bytes, gw.settings.http.body_timeout_s)
    parsed = parse_embeddings_request(raw)
    answer = await unless_client_leaves(
        request,
        gw.late_watches,
        gw.embeddings.answer(
            principal,
            parsed,
            request.state.request_id,
            request.state.ratelimit_headers,
            idempotency_of(request, raw),
        ),
    )
    answer.witness(gw.receipts, raw, receipt_policy(principal))
    return AnswerResponse(answer, request.state.ratelimit_headers)
