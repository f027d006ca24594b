"""POST /v1/chat/completions: count, authenticate, inject faults, generate, answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from teegate.devstack._e2ee import EnclaveE2ee
from teegate.devstack._errors import (
    DevstackHttpError,
    json_response,
    model_not_found,
    simulated_server_error,
)
from teegate.devstack._faults import HANG, HTTP_500, NO_USAGE, SLOW_FIRST_TOKEN
from teegate.devstack._generate import Completion, generate_completions
from teegate.devstack._http import client_left_within, read_body, require_api_key
from teegate.devstack._render import ResponseMeta, chunk_count, completion_body, stream_chunks
from teegate.devstack._request import ChatRequest, parse_chat_request
from teegate.devstack._sealed import is_sealed, sealed_answer
from teegate.devstack._state import DevstackState
from teegate.devstack._stream import StreamPlan, sse_response

HANG_LIMIT_S = 3600.0
"""Even a hung request ends eventually (504) if its client never gives up."""

CLIENT_CLOSED_STATUS = 499
"""Returned once the client has gone; never delivered, it only ends the request."""


class ChatEndpoint:
    """The chat route, as an ASGI app rather than a request handler.

    So the in-flight gauge covers the whole response, streamed body included,
    and drops only when the stream is over or its client has gone.
    """

    def __init__(self, state: DevstackState, e2ee: EnclaveE2ee | None = None) -> None:
        """With `e2ee` (an enclave that serves EHBP) an encrypted request is answered
        encrypted; without, it is read as a plain one (and fails as unreadable JSON)."""
        self._state = state
        self._e2ee = e2ee

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self._state.stats
        stats.chat_requests += 1  # before anything can refuse it: tests count refusals too
        stats.chat_in_flight += 1
        try:
            response = await self._answer(Request(scope, receive))
            await response(scope, receive, send)
        finally:
            stats.chat_in_flight -= 1

    async def _answer(self, request: Request) -> Response:
        state = self._state
        require_api_key(request, state.config.api_key)
        raw = await read_body(request)
        if state.faults.is_on(HTTP_500):
            raise simulated_server_error()
        if state.faults.is_on(HANG):
            return await hang(request)
        if self._e2ee is not None and is_sealed(request):
            return await sealed_answer(state, self._e2ee, request, raw)
        chat = parse_chat_request(raw)
        if state.catalog.find(chat.model) is None:
            raise model_not_found(chat.model)
        completions = generate_completions(
            chat,
            reasoning=state.catalog.supports(chat.model, "reasoning"),
            cap_tokens=state.config.completion_tokens,
        )
        if chat.stream:
            return self._stream(chat, completions)
        return await self._body(request, chat, completions)

    def _stream(self, chat: ChatRequest, completions: tuple[Completion, ...]) -> Response:
        usage = chat.include_usage and not self._state.faults.is_on(NO_USAGE)
        total = chunk_count(completions, usage=usage)
        plan = StreamPlan.for_stream(self._state.faults, self._state.config, total)
        chunks = stream_chunks(completions, ResponseMeta.new(chat.model), usage=usage)
        return sse_response(chunks, plan)

    async def _body(
        self, request: Request, chat: ChatRequest, completions: tuple[Completion, ...]
    ) -> Response:
        faults, config = self._state.faults, self._state.config
        delay_s = config.first_token_delay_s if faults.is_on(SLOW_FIRST_TOKEN) else 0.0
        if delay_s > 0 and await client_left_within(request.receive, delay_s):
            return Response(status_code=CLIENT_CLOSED_STATUS)
        meta = ResponseMeta.new(chat.model)
        body = completion_body(completions, meta, usage=not faults.is_on(NO_USAGE))
        return json_response(body)


async def hang(request: Request) -> Response:
    """The `hang` fault: answer nothing until the client leaves (bounded by HANG_LIMIT_S)."""
    if await client_left_within(request.receive, HANG_LIMIT_S):
        return Response(status_code=CLIENT_CLOSED_STATUS)
    raise DevstackHttpError(
        504, "devstack fault hang: gave up waiting", type_="server_error", code="timeout"
    )
