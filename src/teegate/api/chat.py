"""POST /v1/chat/completions: parse, call the chat service, shape the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from teegate.api._body import read_json_body
from teegate.api._responses import JSON
from teegate.api._state import authorize, gateway
from teegate.api._streaming import SSEResponse, until_disconnect
from teegate.catalog import Admitted
from teegate.chat import parse_chat_request
from teegate.errors import UpstreamError

T = TypeVar("T")
WATCH_AFTER_S = 0.05


async def create_chat_completion(request: Request) -> Response | SSEResponse:
    gw = gateway(request)
    principal = await authorize(request)
    raw = await read_json_body(request, gw.settings.max_body_bytes)
    chat = parse_chat_request(raw, gw.settings.defaults)
    request_id: str = request.state.request_id
    if chat.stream:
        streamed = await _unless_client_leaves(request, gw.chat.stream(principal, chat, request_id))
        try:
            headers = _headers(request, streamed.admitted)
        except BaseException:
            await streamed.aclose()
            raise
        return SSEResponse(streamed, headers)
    completion = await _unless_client_leaves(request, gw.chat.complete(principal, chat, request_id))
    return Response(
        orjson.dumps(completion.body),
        media_type=JSON,
        headers=_headers(request, completion.admitted),
    )


def _headers(request: Request, admitted: Admitted) -> dict[str, str]:
    headers = dict(request.state.ratelimit_headers)
    headers["X-TEE-Attestation"] = admitted.attestation.header
    return headers


async def _unless_client_leaves(request: Request, call: Awaitable[T]) -> T:
    """Run the upstream call, cancelling it if the client disconnects first.

    The disconnect watcher (a second task) is only started once the call has run
    for WATCH_AFTER_S: a fast answer costs no watcher at all. A stream's call ends
    when the upstream has answered with headers; from then on SSEResponse watches.
    """
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait((task,), timeout=WATCH_AFTER_S)
    if done:
        return task.result()
    watcher = asyncio.ensure_future(until_disconnect(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise UpstreamError("the client disconnected before the completion finished")
    return task.result()
