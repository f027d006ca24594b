"""The stream relay: events of one socket read go out in one write, the usage chunk
stays private unless asked for, and a fault mid-read keeps what came before it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import orjson

from teegate.chat._service import Relayed, _relay
from teegate.upstream import UpstreamStream

CONTENT = orjson.dumps({"choices": [{"index": 0, "delta": {"content": "héllo"}}]})
USAGE = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})


class FakeStream:
    def __init__(self, reads: list[list[bytes]]) -> None:
        self.reads = reads
        self.closed = self.released = False

    async def events(self) -> AsyncIterator[list[bytes]]:
        for read in self.reads:
            yield read

    def close(self) -> None:
        self.closed = True

    async def finish(self) -> None:
        self.released = True


async def relay(reads: list[list[bytes]], include_usage: bool) -> tuple[list[bytes], Relayed]:
    stream, relayed = FakeStream(reads), Relayed()
    writes = [w async for w in _relay(cast(UpstreamStream, stream), include_usage, relayed)]
    assert stream.closed
    return writes, relayed


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


async def test_one_write_per_socket_read_and_the_usage_chunk_kept_private() -> None:
    writes, outcome = await relay([[CONTENT, CONTENT], [USAGE, b"[DONE]"]], False)
    assert writes == [sse(CONTENT) * 2, sse(b"[DONE]")]
    assert outcome.status == "ok"
    assert outcome.tally.usage is not None and outcome.tally.usage.completion_tokens == 2
    assert outcome.tally.output_bytes == 2 * len("héllo".encode())


async def test_the_usage_chunk_is_relayed_when_asked_for() -> None:
    writes, _ = await relay([[CONTENT], [USAGE, b"[DONE]"]], True)
    assert writes == [sse(CONTENT), sse(USAGE) + sse(b"[DONE]")]


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
