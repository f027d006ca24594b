"""POST /v1/chat/completions: parse, call the chat service, send its answer.

A request carrying EHBP's `Ehbp-Encapsulated-Key` is encrypted to the model's
enclave: it takes the sealed path (clear headers only, relayed blind). With
`require_e2ee` on, a plain one is refused before its body is read.
"""

from __future__ import annotations

from starlette.requests import Request

from teegate.api._answer import AnswerResponse
from teegate.api._body import idempotency_of, read_body, read_json_body
from teegate.api._disconnect import unless_client_leaves
from teegate.api._state import authorize, gateway, receipt_policy
from teegate.chat import Answer, is_sealed, parse_chat_request, parse_sealed_request
from teegate.errors import E2eeRequired


async def create_chat_completion(request: Request) -> AnswerResponse:
    gw = gateway(request)
    principal = await authorize(request)
    timeout_s = gw.settings.http.body_timeout_s
    answer: Answer
    if is_sealed(request.headers):
        raw = await read_body(request, gw.settings.max_body_bytes, timeout_s)
        sealed = parse_sealed_request(request.headers, raw)
        answer = await unless_client_leaves(
            request,
            gw.late_watches,
            gw.chat.answer_sealed(
                principal, sealed, request.state.request_id, request.state.ratelimit_headers
            ),
        )
        answer.witness(gw.receipts, raw, receipt_policy(principal))
        return AnswerResponse(answer, request.state.ratelimit_headers)
    if gw.settings.require_e2ee:
        raise E2eeRequired
    raw = await read_json_body(request, gw.settings.max_body_bytes, timeout_s)
    chat = parse_chat_request(raw, gw.settings.defaults)
    answer = await unless_client_leaves(
        request,
        gw.late_watches,
        gw.chat.answer(
            principal,
            chat,
            request.state.request_id,
            request.state.ratelimit_headers,
            idempotency_of(request, raw),
        ),
    )
    answer.witness(gw.receipts, raw, receipt_policy(principal))
    return AnswerResponse(answer, request.state.ratelimit_headers)
