"""The stream relay: events of one socket read go out in one write, the usage chunk
stays private unless asked for, and a fault mid-read keeps what came before it."""

from __future__ import annotations

from typing import Any

import orjson

from teegate.billing import Outcome
from tests.support.chat import (
    CONTENT,
    USAGE,
    FakeStream,
    FakeUpstream,
    RecordingMeter,
    RecordingSink,
    an_answer,
    sse,
)


async def relay(reads: list[list[bytes]], include_usage: bool) -> tuple[list[bytes], Outcome]:
    """The writes of a streamed answer, its end of body apart, and what it settled."""
    events: list[tuple[str, Any]] = []
    stream, meter, sink = FakeStream(reads), RecordingMeter(events), RecordingSink(events)
    answer = await an_answer(
        FakeUpstream(stream=stream), meter, stream=True, include_usage=include_usage
    )
    await answer.send(sink)
    assert stream.closed
    assert sink.bodies[-1] == b"" and events[-3] == ("body", False)
    [outcome] = meter.outcomes
    return sink.bodies[:-1], outcome


async def test_one_write_per_socket_read_and_the_usage_chunk_kept_private() -> None:
    writes, outcome = await relay([[CONTENT, CONTENT], [USAGE, b"[DONE]"]], False)
    assert writes == [sse(CONTENT) * 2, sse(b"[DONE]")]
    assert outcome.status == "ok"
    assert outcome.usage is not None and outcome.usage.completion_tokens == 2
    assert outcome.output_bytes == 2 * len("héllo".encode())


async def test_the_usage_chunk_is_relayed_when_asked_for() -> None:
    writes, _ = await relay([[CONTENT], [USAGE, b"[DONE]"]], True)
    assert writes == [sse(CONTENT), sse(USAGE) + sse(b"[DONE]")]


async def test_the_upstream_is_always_asked_for_usage() -> None:
    upstream = FakeUpstream()
    await an_answer(upstream, RecordingMeter([]), stream=True)
    assert upstream.bodies[0]["stream_options"] == {"include_usage": True}


async def test_a_bad_event_mid_read_keeps_the_events_before_it() -> None:
    writes, outcome = await relay([[CONTENT, b"not json", CONTENT]], False)
    assert len(writes) == 1
    assert writes[0].startswith(sse(CONTENT) + b"data: ")
    error: dict[str, Any] = orjson.loads(writes[0][len(sse(CONTENT)) + 6 :])
    assert error["error"]["code"] == "upstream_error"
    assert outcome.status == "upstream_error"


async def test_a_stream_that_ends_without_done_is_an_upstream_error() -> None:
    writes, outcome = await relay([[CONTENT]], False)
    assert writes[0] == sse(CONTENT)
    assert b"upstream_error" in writes[1]
    assert outcome.status == "upstream_error"
