"""POST /v1/chat/completions: parse, call the chat service, send its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from teegate.api._answer import AnswerResponse
from teegate.api._body import read_json_body
from teegate.api._disconnect import DisconnectWatch, LateWatches
from teegate.api._state import authorize, gateway
from teegate.chat import parse_chat_request
from teegate.errors import ClientClosedRequest

T = TypeVar("T")


async def create_chat_completion(request: Request) -> AnswerResponse:
    gw = gateway(request)
    principal = await authorize(request)
    raw = await read_json_body(request, gw.settings.max_body_bytes)
    chat = parse_chat_request(raw, gw.settings.defaults)
    answer = await _unless_client_leaves(
        request,
        gw.late_watches,
        gw.chat.answer(principal, chat, request.state.request_id, request.state.ratelimit_headers),
    )
    return AnswerResponse(answer, request.state.ratelimit_headers)


async def _unless_client_leaves(request: Request, late: LateWatches, call: Awaitable[T]) -> T:
    """Run the upstream call, cancelling it if the client disconnects first.

    The call runs in this task; the watch starts only if the call is still
    running after WATCH_AFTER_S (LateWatches), so a fast answer costs two dict
    operations and nothing else.
    A stream's call ends when the upstream has answered with headers; from then
    on AnswerResponse watches.
    """
    watch = DisconnectWatch(request.receive)
    late.add(watch)
    try:
        return await call
    except asyncio.CancelledError:
        if not watch.saw_disconnect:
            raise
        watch.absorb()
        raise ClientClosedRequest("the client left before the completion finished") from None
    finally:
        late.remove(watch)
        watch.stop()
