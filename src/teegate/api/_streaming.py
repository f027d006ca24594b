"""An SSE response that notices a client leaving even while the upstream is silent.

Starlette's StreamingResponse learns of a disconnect only when a write fails;
a stream waiting on a slow upstream would hold its upstream connection (and
keep it generating) until a timeout. Here a watcher cancels the relay at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from starlette.types import Receive, Scope, Send

from teegate.api._middleware import BODY_SEND
from teegate.chat import StreamedCompletion

SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


class SSEResponse:
    def __init__(self, streamed: StreamedCompletion, headers: Mapping[str, str]) -> None:
        self._streamed = streamed
        self._chunks = streamed.chunks
        self._headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in {**SSE_HEADERS, **headers}.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        send_body = scope.get(BODY_SEND, send)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                async for chunk in self._chunks:
                    await send_body(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
                await send_body({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away mid-write
        finally:
            with anyio.CancelScope(shield=True):
                await self._streamed.aclose()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def until_disconnect(receive: Receive) -> None:
    """Returns when the client disconnects; for racing a non-stream upstream call."""
    while (await receive())["type"] != "http.disconnect":
        pass
