"""An SSE response that notices a client leaving even while the upstream is silent.

Starlette's StreamingResponse learns of a disconnect only when a write fails;
a stream waiting on a slow upstream would hold its upstream connection (and
keep it generating) until a timeout. Here a watcher cancels the relay at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import anyio
from starlette.types import Receive, Scope, Send

from teegate.api._disconnect import DisconnectWatch
from teegate.api._middleware import BODY_SEND
from teegate.chat import StreamedCompletion

SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


class SSEResponse:
    def __init__(self, streamed: StreamedCompletion, headers: Mapping[str, str]) -> None:
        self._streamed = streamed
        self._headers = [
            *SSE_HEADERS,
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        send_body = scope.get(BODY_SEND, send)
        watch = DisconnectWatch(receive)
        watch.start()
        try:
            async for chunk in self._streamed.chunks:
                await send_body({"type": "http.response.body", "body": chunk, "more_body": True})
            await send_body({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watch.saw_disconnect:
                raise
            watch.absorb()
        except OSError:
            pass  # the client went away mid-write
        finally:
            watch.stop()
            with anyio.CancelScope(shield=True):
                await self._streamed.aclose()
