"""An Answer over ASGI: its headers, its body past the per-chunk wrappers, and a
stream that notices its client leaving even while the upstream is silent.

Starlette's StreamingResponse learns of a disconnect only when a write fails;
a stream waiting on a slow upstream would hold its upstream connection (and
keep it generating) until a timeout. Here a watch cancels the relay at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping

from opentelemetry.trace import Span, Tracer
from starlette.types import Receive, Scope, Send

from teegate.api._disconnect import DisconnectWatch
from teegate.api._middleware import BODY_SEND, METRICS, STARTED, TRACER
from teegate.chat import Answer, ResponseHead
from teegate.metrics import Metrics

JSON_HEADERS = ((b"content-type", b"application/json"),)
SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


class AnswerResponse:
    """The ASGI side of `Answer.send`: it is the answer's Sink, for one request."""

    __slots__ = (
        "_answer",
        "_headers",
        "_metrics",
        "_receive",
        "_relay",
        "_send",
        "_send_body",
        "_sent_bytes",
        "_started",
        "_watch",
    )

    def __init__(self, answer: Answer, headers: Mapping[str, str]) -> None:
        self._answer = answer
        self._headers = headers
        self._watch: DisconnectWatch | None = None
        self._started: float | None = None
        self._metrics: Metrics | None = None
        self._relay: Span | None = None
        self._sent_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        self._send_body: Send = scope.get(BODY_SEND, send)
        self._receive = receive
        self._started = scope.get(STARTED)
        self._metrics = scope.get(METRICS)
        tracer: Tracer | None = scope.get(TRACER)
        if tracer is not None:  # ended by close(): the settlement that follows is its own span
            model = self._answer.admitted.model.id
            self._relay = tracer.start_span("relay", attributes={"teegate.model": model})
        try:
            await self._answer.send(self)
        except asyncio.CancelledError:
            if self._watch is None or not self._watch.saw_disconnect:
                raise
            self._watch.absorb()
        except OSError:
            pass  # the client went away mid-write

    def start(self, length: int | None, head: ResponseHead | None = None) -> Awaitable[None]:
        status = 200
        own: tuple[tuple[bytes, bytes], ...]
        if head is None:
            own = SSE_HEADERS if length is None else JSON_HEADERS
        else:  # an encrypted answer: the enclave's status, content type and EHBP nonce
            status = head.status
            own = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in head.headers)
        headers = [
            *own,
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self._headers.items()),
            (b"x-tee-attestation", self._answer.admitted.attestation.header.encode("latin-1")),
        ]
        receipt_id = self._answer.receipt_id
        if receipt_id is not None:
            headers.append((b"x-tee-receipt", receipt_id.encode("latin-1")))
        if length is None:  # the watch runs once this task next waits: on the start or later
            self._watch = DisconnectWatch(self._receive)
            self._watch.start()
        else:
            headers.append((b"content-length", str(length).encode()))
        return self._send({"type": "http.response.start", "status": status, "headers": headers})

    def write(self, body: bytes, more: bool) -> Awaitable[None]:
        if self._started is not None and self._metrics is not None:  # the first write only
            first_token_s = time.perf_counter() - self._started
            self._metrics.observe_first_token(self._answer.admitted.model.id, first_token_s)
            self._started = None
        if self._relay is not None:
            self._sent_bytes += len(body)
        return self._send_body({"type": "http.response.body", "body": body, "more_body": more})

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._relay is not None:
            self._relay.set_attribute("teegate.response_bytes", self._sent_bytes)
            self._relay.set_attribute("teegate.stream", self._watch is not None)
            self._relay.end()
            self._relay = None
