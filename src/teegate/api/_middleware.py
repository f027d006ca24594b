"""Request ids, access logs and request metrics, as plain ASGI (no per-request task)."""

from __future__ import annotations

import itertools
import secrets
import time

import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from teegate.api._errors import on_unexpected
from teegate.metrics import Metrics

log = structlog.get_logger("teegate.access")

SLOW_REQUEST_S = 1.0
"""Failed requests, and requests slow to start their answer, are logged one line
each; the rest are counted in metrics only: a log line per request would cost
more than the gateway itself. A stream is slow if its headers were, not because
it streamed for long."""


BODY_SEND = "teegate.body_send"
"""Scope key of the send this middleware was given. The wrappers inside it (its
own, Starlette's exception handling) look only at the response start; a stream
sends its chunks here, past them, since each wrapper is a call per chunk."""


STARTED = "teegate.started"
"""Scope key of the request's arrival (perf_counter): an answer's time to first token
counts from it."""
METRICS = "teegate.metrics"
"""Scope key of the gateway's Metrics, for the answer's first-token time."""
TRACER = "teegate.tracer"
"""Scope key of the OpenTelemetry tracer while tracing is on (the answer's relay span)."""
STATUS = "teegate.status"
"""Scope key of the status the request was answered with, once it has been."""


class RequestIds:
    """Unique request ids without a syscall per request.

    A random 64-bit prefix per process and a counter: ids never repeat across
    replicas or restarts (they key holds), and need not be unguessable (every
    lookup by id is scoped to the caller's own account).
    """

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        slow_request_s: float = SLOW_REQUEST_S,
        tracer: Tracer | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.slow_request_s = slow_request_s
        self.request_ids = RequestIds()
        self.tracer = tracer
        """None while tracing is off: then a request makes no span at all."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.tracer is None:
            await self._serve(scope, receive, send)
            return
        scope[TRACER] = self.tracer
        with self.tracer.start_as_current_span(
            scope["method"],
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"]},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await self._serve(scope, receive, send)
            finally:
                route, status = _route_label(scope), scope.get(STATUS, 500)
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("teegate.request_id", scope["state"]["request_id"])
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, str(status)))

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = self.request_ids.next()
        scope.setdefault("state", {})["request_id"] = request_id
        scope[BODY_SEND] = send
        started = scope[STARTED] = time.perf_counter()
        scope[METRICS] = self.metrics
        answered = 0.0
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = time.perf_counter()
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if answered:  # a body already under way can only be cut short
                    raise
                # Answered here, inside this middleware, not by Starlette's outermost
                # handler: that one re-raises after answering, which closes the
                # connection, and its answer never passes `send_with_id` (no request id).
                response = await on_unexpected(Request(scope), exc)
                await response(scope, receive, send_with_id)
        finally:
            scope[STATUS] = status
            route = _route_label(scope)
            ended = time.perf_counter()
            self.metrics.count_request(route, status, ended - started)
            to_answer_s = (answered or ended) - started
            if status >= 400 or to_answer_s >= self.slow_request_s:
                log.info(
                    "request",
                    request_id=request_id,
                    method=scope["method"],
                    route=route,
                    status=status,
                    answer_ms=round(to_answer_s * 1000, 3),
                    duration_ms=round((ended - started) * 1000, 3),
                )


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
