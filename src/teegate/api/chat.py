"""POST /v1/chat/completions: parse, call the chat service, shape the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from teegate.api._body import read_json_body
from teegate.api._disconnect import DisconnectWatch, LateWatches
from teegate.api._responses import JSON
from teegate.api._state import authorize, gateway
from teegate.api._streaming import SSEResponse
from teegate.catalog import Admitted
from teegate.chat import Completion, parse_chat_request
from teegate.errors import ClientClosedRequest

T = TypeVar("T")


async def create_chat_completion(request: Request) -> Response | SSEResponse:
    gw = gateway(request)
    principal = await authorize(request)
    raw = await read_json_body(request, gw.settings.max_body_bytes)
    chat = parse_chat_request(raw, gw.settings.defaults)
    request_id: str = request.state.request_id
    if chat.stream:
        streamed = await _unless_client_leaves(
            request, gw.late_watches, gw.chat.stream(principal, chat, request_id)
        )
        try:
            headers = _headers(request, streamed.admitted)
        except BaseException:
            await streamed.aclose()
            raise
        return SSEResponse(streamed, headers)
    completion = await _unless_client_leaves(
        request, gw.late_watches, gw.chat.complete(principal, chat, request_id)
    )
    try:
        return SettledAfterSending(completion, _headers(request, completion.admitted))
    except BaseException:
        await completion.settle()
        raise


class SettledAfterSending(Response):
    """The answer, then its settlement: whether the send worked or the client had
    gone, the charge for what the upstream delivered is settled exactly once."""

    def __init__(self, completion: Completion, headers: dict[str, str]) -> None:
        super().__init__(completion.raw, media_type=JSON, headers=headers)
        self._completion = completion

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._completion.settle()


def _headers(request: Request, admitted: Admitted) -> dict[str, str]:
    headers = dict(request.state.ratelimit_headers)
    headers["X-TEE-Attestation"] = admitted.attestation.header
    return headers


async def _unless_client_leaves(request: Request, late: LateWatches, call: Awaitable[T]) -> T:
    """Run the upstream call, cancelling it if the client disconnects first.

    The call runs in this task; the watch starts only if the call is still
    running after WATCH_AFTER_S (LateWatches), so a fast answer costs two dict
    operations and nothing else.
    A stream's call ends when the upstream has answered with headers; from then
    on SSEResponse watches.
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
