"""POST /v1/chat/completions: parse, call the chat service, send its answer."""

from __future__ import annotations

from starlette.requests import Request

from teegate.api._answer import AnswerResponse
from teegate.api._body import idempotency_of, read_json_body
from teegate.api._disconnect import unless_client_leaves
from teegate.api._state import authorize, gateway, receipt_policy
from teegate.chat import parse_chat_request


async def create_chat_completion(request: Request) -> AnswerResponse:
    gw = gateway(request)
    principal = await authorize(request)
    raw = await read_json_body(request, gw.settings.max_body_bytes, gw.settings.http.body_timeout_s)
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
