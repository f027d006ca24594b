"""OpenTelemetry traces of the request path, for operators; off unless `otel_endpoint`
names an OTLP/HTTP collector.

Off, nothing here is built: the wiring hands the domain `chat.NO_TRACE` and the
undecorated meter, upstream clients and authenticator, so a request makes no span
object and calls no tracer. On, each request is one trace: the server span the web
layer opens, and under it `auth`, `gate`, `hold`, `upstream`, `relay` and `settle`.
The spans are made here, by decorators the wiring puts around the parts that do
each step (the domain names only its gate, through `chat.Trace`).

Attributes are ids, names, statuses and counts: the request id, the model, the
upstream, token counts, bytes and nano-USD amounts. Never a prompt, a completion or
an error's message (a span records the error's type and code only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from teegate.apikeys import Principal
from teegate.billing import Hold, HoldRequest, Outcome, Settlement
from teegate.chat import Meter, UpstreamStream
from teegate.config import Settings
from teegate.errors import TeegateError
from teegate.upstream import UpstreamClient

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

SPAN_STEPS = ("auth", "gate", "hold", "upstream", "relay", "settle")
"""The spans under each request's server span, in the order a request meets them."""

Attributes = Mapping[str, str | int | bool]
Reply = tuple[bytes, dict[str, Any]]


class Tracing:
    """The tracer of one app, and the decorators that trace each step."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self.tracer: Tracer = provider.get_tracer("teegate")

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Attributes, *, kind: SpanKind = SpanKind.INTERNAL
    ) -> Iterator[Span]:
        """A span made current for what runs inside it; an exception marks it failed
        by type and code (its message may quote the request: it is not recorded)."""
        with self.tracer.start_as_current_span(
            name,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                failed(span, exc)
                raise

    def step(self, name: str, model: str) -> contextlib.AbstractContextManager[object]:
        """`chat.Trace`: the gate's span."""
        return self.span(name, {"teegate.model": model})

    def start(self, name: str, attributes: Attributes) -> Span:
        """A span under the current one, left for the caller to end (the relay's: it
        ends when the answer's body does, before the settlement starts)."""
        return self.tracer.start_span(name, attributes=attributes)

    def meter(self, meter: Meter) -> Meter:
        return TracedMeter(meter, self)

    def upstreams(self, clients: Mapping[str, UpstreamClient]) -> dict[str, TracedUpstream]:
        return {name: TracedUpstream(client, self) for name, client in clients.items()}

    def authenticator(self, authenticator: Authenticates) -> Authenticates:
        return TracedAuthenticator(authenticator, self)

    def shutdown(self) -> None:
        """Export what is still buffered, then stop."""
        shutdown = getattr(self._provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def failed(span: Span, exc: BaseException) -> None:
    code = exc.error_code if isinstance(exc, TeegateError) else type(exc).__name__
    span.set_status(Status(StatusCode.ERROR, code))
    span.set_attribute("error.type", type(exc).__name__)


class Authenticates(Protocol):
    async def authenticate(self, authorization: str | None) -> Principal: ...


class TracedAuthenticator:
    __slots__ = ("_inner", "_tracing")

    def __init__(self, inner: Authenticates, tracing: Tracing) -> None:
        self._inner = inner
        self._tracing = tracing

    async def authenticate(self, authorization: str | None) -> Principal:
        with self._tracing.span("auth", {}) as span:
            principal = await self._inner.authenticate(authorization)
            span.set_attribute("teegate.key_id", principal.key_id)
            span.set_attribute("teegate.account_id", principal.account_id)
            return principal


class TracedMeter:
    """`chat.Meter` with the `hold` and `settle` spans."""

    __slots__ = ("_inner", "_tracing")

    def __init__(self, inner: Meter, tracing: Tracing) -> None:
        self._inner = inner
        self._tracing = tracing

    async def place(self, request: HoldRequest) -> Hold:
        attributes = {"teegate.request_id": request.request_id, "teegate.model": request.model}
        with self._tracing.span("hold", attributes) as span:
            hold = await self._inner.place(request)
            span.set_attribute("teegate.hold.amount_nano", hold.amount_nano)
            span.set_attribute("teegate.hold.prompt_tokens", hold.prompt_tokens)
            span.set_attribute("teegate.hold.completion_tokens", hold.completion_tokens)
            return hold

    def watch(self, hold: Hold, outcome: Outcome) -> None:
        self._inner.watch(hold, outcome)

    async def settle(self, hold: Hold, outcome: Outcome) -> Settlement | None:
        attributes: dict[str, str | int | bool] = {
            "teegate.request_id": hold.request_id,
            "teegate.model": hold.model,
            "teegate.outcome": outcome.status,
            "teegate.output_bytes": outcome.output_bytes,
        }
        if outcome.usage is not None:
            attributes["gen_ai.usage.input_tokens"] = outcome.usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = outcome.usage.completion_tokens
        with self._tracing.span("settle", attributes):
            return await self._inner.settle(hold, outcome)


class TracedUpstream:
    """An upstream client with the `upstream` span: the call until its answer (a
    stream: until its headers; the relay's span covers the rest)."""

    __slots__ = ("_inner", "_tracing")

    def __init__(self, inner: UpstreamClient, tracing: Tracing) -> None:
        self._inner = inner
        self._tracing = tracing

    def _span(self, operation: str) -> contextlib.AbstractContextManager[Span]:
        attributes = {"teegate.upstream": self._inner.name, "teegate.operation": operation}
        return self._tracing.span("upstream", attributes, kind=SpanKind.CLIENT)

    async def complete(self, body: bytes, *, pin: bytes | None = None) -> Reply:
        with self._span("chat"):
            return await self._inner.complete(body, pin=pin)

    async def embed(self, body: bytes, *, pin: bytes | None = None) -> Reply:
        with self._span("embeddings"):
            return await self._inner.embed(body, pin=pin)

    async def open_stream(self, body: bytes, *, pin: bytes | None = None) -> UpstreamStream:
        with self._span("chat.stream"):
            return await self._inner.open_stream(body, pin=pin)


def tracing_from_settings(
    settings: Settings, exporter: SpanExporter | None = None
) -> Tracing | None:
    """None (tracing off) unless `otel_endpoint` is set or an exporter is given (a test's
    in-memory one). The SDK is imported only when tracing is on."""
    if exporter is None and settings.otel_endpoint is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = SdkTracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint))
        )
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)
