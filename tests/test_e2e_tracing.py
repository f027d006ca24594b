"""OpenTelemetry traces, read from an in-memory exporter: one trace per request, with a
span per step (auth, gate, hold, upstream, relay, settle) under the server span, and
no prompt or completion in any name, attribute, event or status."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from teegate.app import create_app
from teegate.config import load_settings
from teegate.tracing import SPAN_STEPS, tracing_from_settings
from tests.support.gateway import Devstack, Gateway, attested_settings, prepare_database
from tests.support.servers import ServerThread

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
CANARY = "canary-51d0c2aa traces must never see this"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": CANARY}]


@pytest.fixture(scope="module")
def traced(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, InMemorySpanExporter]]:
    settings = attested_settings(
        tmp_path_factory.mktemp("traced"), devstack, attestation_services, enclave_files
    )
    key = prepare_database(settings, "traced")
    exporter = InMemorySpanExporter()
    server = ServerThread(create_app(settings, span_exporter=exporter)).start()
    try:
        yield Gateway(server.url, settings, key, "traced"), exporter
    finally:
        server.stop()


def trace_of(exporter: InMemorySpanExporter, request_id: str) -> list[ReadableSpan]:
    """The spans of one request, once its server span (the last to end) has ended."""
    deadline = time.monotonic() + 10
    while True:
        spans = exporter.get_finished_spans()
        roots = [s for s in spans if (s.attributes or {}).get("teegate.request_id") == request_id]
        root = next((s for s in roots if s.kind == SpanKind.SERVER), None)
        if root is not None:
            assert root.context is not None
            return [s for s in spans if s.context and s.context.trace_id == root.context.trace_id]
        assert time.monotonic() < deadline, "the request's trace never ended"
        time.sleep(0.02)


def steps(spans: Sequence[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    (root,) = [s for s in spans if s.kind == SpanKind.SERVER]
    assert root.context is not None and root.parent is None
    children = sorted((s for s in spans if s is not root), key=lambda s: s.start_time or 0)
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children)
    return root, children


def assert_no_content(spans: Sequence[ReadableSpan], *texts: str) -> None:
    for span in spans:
        seen = [
            span.name,
            str(span.status.description),
            *map(str, span.resource.attributes.values()),
        ]
        seen += [f"{k}={v!r}" for k, v in (span.attributes or {}).items()]
        for event in span.events:
            seen += [event.name, *map(str, (event.attributes or {}).values())]
        for text in texts:
            assert not any(text in s for s in seen), (span.name, text)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_completion_is_one_trace_with_a_span_per_step(
    traced: tuple[Gateway, InMemorySpanExporter], stream: bool
) -> None:
    gateway, exporter = traced
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=R1, messages=ASK, max_tokens=24, stream=stream
    )
    parsed = raw.parse()
    answer = (
        "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
        if isinstance(parsed, openai.Stream)
        else parsed.choices[0].message.content or ""
    )
    request_id = raw.headers["x-request-id"]

    root, children = steps(trace_of(exporter, request_id))
    assert root.name == "POST /v1/chat/completions"
    assert (root.attributes or {})["http.response.status_code"] == 200
    assert [s.name for s in children] == list(SPAN_STEPS)  # in the order a request meets them
    by_name = {s.name: s for s in children}
    assert all(s.status.status_code != StatusCode.ERROR for s in children)
    assert (by_name["gate"].attributes or {})["teegate.model"] == R1
    assert (by_name["hold"].attributes or {})["teegate.request_id"] == request_id
    assert (by_name["upstream"].attributes or {})["teegate.upstream"] == "devstack"
    assert by_name["upstream"].kind == SpanKind.CLIENT
    relay = by_name["relay"].attributes or {}
    assert (relay["teegate.model"], relay["teegate.stream"]) == (R1, stream)
    assert int(str(relay["teegate.response_bytes"])) > len(answer.encode())
    settle = by_name["settle"].attributes or {}
    assert settle["teegate.outcome"] == "ok"
    assert int(str(settle["gen_ai.usage.output_tokens"])) > 0
    relay_end, settle_start = by_name["relay"].end_time or 0, by_name["settle"].start_time or 0
    assert relay_end <= settle_start  # the answer is out before it is settled
    assert len(answer) > 0
    assert_no_content([root, *children], CANARY, answer[:24])


def test_a_refused_request_is_traced_to_the_step_that_refused(
    traced: tuple[Gateway, InMemorySpanExporter],
) -> None:
    gateway, exporter = traced
    with pytest.raises(openai.NotFoundError) as info:
        gateway.client().chat.completions.with_raw_response.create(
            model="no/such-model", messages=ASK
        )
    request_id = info.value.response.headers["x-request-id"]
    root, children = steps(trace_of(exporter, request_id))
    assert [s.name for s in children] == ["auth", "gate"]  # nothing held, nothing sent
    (gate,) = children[1:]
    assert (gate.status.status_code, gate.status.description) == (
        StatusCode.ERROR,
        "model_not_found",
    )
    assert (root.attributes or {})["http.response.status_code"] == 404
    assert_no_content([root, *children], CANARY)


def test_tracing_is_off_unless_an_endpoint_is_set(tmp_path: Path) -> None:
    assert tracing_from_settings(load_settings(None, environment="development")) is None
    on = tracing_from_settings(
        load_settings(None, environment="development", otel_endpoint="http://127.0.0.1:9/v1/traces")
    )
    assert on is not None
    on.shutdown()
