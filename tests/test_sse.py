"""upstream/_sse.py: the `data` of each server-sent event, from lines as they arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from teegate.upstream import SSEError, iter_sse_data
from teegate.upstream import _sse as sse_module


async def feed(lines: Iterable[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        await asyncio.sleep(0)  # lines arrive one by one, as from a socket
        yield line


async def events(lines: Iterable[bytes]) -> list[bytes]:
    return [data async for data in iter_sse_data(feed(lines))]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([b"data: {}\n", b"\n"], [b"{}"], id="one event"),
        pytest.param(
            [b"data: a\n", b"\n", b"data: b\n", b"\n", b"data: [DONE]\n", b"\n"],
            [b"a", b"b", b"[DONE]"],
            id="several events",
        ),
        pytest.param(
            [b"data: first\n", b"data: second\n", b"data: third\n", b"\n"],
            [b"first\nsecond\nthird"],
            id="multi-line event joined with newlines",
        ),
        pytest.param([b"data:tight\n", b"\n"], [b"tight"], id="no space after the colon"),
        pytest.param(
            [b"data:  two spaces\n", b"\n"], [b" two spaces"], id="only one space is stripped"
        ),
        pytest.param([b"data: x\r\n", b"\r\n"], [b"x"], id="CRLF"),
        pytest.param(
            [b"data: a\r\n", b"data: b\r\n", b"\r\n", b"data: c\n", b"\n"],
            [b"a\nb", b"c"],
            id="CRLF multi-line then LF",
        ),
        pytest.param(
            [b": keep-alive\n", b"\n", b"data: x\n", b": comment inside\n", b"\n"],
            [b"x"],
            id="comments dropped",
        ),
        pytest.param(
            [b"event: message\n", b"id: 7\n", b"retry: 100\n", b"data: x\n", b"\n"],
            [b"x"],
            id="other fields dropped",
        ),
        pytest.param([b"event: ping\n", b"\n"], [], id="event without data yields nothing"),
        pytest.param([b"\n", b"\n", b"data: x\n", b"\n", b"\n"], [b"x"], id="blank lines"),
        pytest.param([b"data: \n", b"data: x\n", b"\n"], [b"\nx"], id="empty data line"),
        pytest.param([b"data: tail\n"], [b"tail"], id="last event without blank line"),
        pytest.param([], [], id="empty stream"),
        pytest.param(
            [b'data: {"choices":[{"delta":{"content":"\xc3\xa9"}}]}\n', b"\n"],
            [b'{"choices":[{"delta":{"content":"\xc3\xa9"}}]}'],
            id="bytes untouched",
        ),
        pytest.param(
            [b"data: a: b: c\n", b"\n"], [b"a: b: c"], id="colons inside the payload kept"
        ),
        pytest.param(
            [b"data: a\r", b"\n\r", b"\ndata: b\n\n"], [b"a", b"b"], id="CRLF split across chunks"
        ),
        pytest.param(
            [b"data: a\n\ndata: b\n\ndata: [DONE]\n\n"],
            [b"a", b"b", b"[DONE]"],
            id="several events in one chunk",
        ),
        pytest.param([b"da", b"ta: sp", b"lit\n", b"\n"], [b"split"], id="an event split anywhere"),
    ],
)
async def test_iter_sse_data(lines: list[bytes], expected: list[bytes]) -> None:
    assert await events(lines) == expected


async def test_events_are_yielded_as_they_complete() -> None:
    """Each event is relayed at its blank line, before the next line is read."""
    read: list[bytes] = []

    async def source() -> AsyncIterator[bytes]:
        for line in [b"data: one\n", b"\n", b"data: two\n", b"\n"]:
            read.append(line)
            yield line

    stream = iter_sse_data(source())
    assert await anext(stream) == b"one"
    assert read == [b"data: one\n", b"\n"]
    assert await anext(stream) == b"two"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_event_at_the_size_limit_passes() -> None:
    limit = sse_module.MAX_EVENT_BYTES
    half = b"x" * (limit // 2)
    (data,) = await events([b"data: " + half + b"\n", b"data: " + half + b"\n", b"\n"])
    assert len(data) == limit + 1  # two halves and the joining newline


async def test_oversize_event_is_refused() -> None:
    limit = sse_module.MAX_EVENT_BYTES
    half = b"x" * (limit // 2)
    with pytest.raises(SSEError, match=str(limit)):
        await events([b"data: " + half + b"\n", b"data: " + half + b"x\n", b"\n"])


async def test_the_limit_is_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse_module, "MAX_EVENT_BYTES", 8)
    ok = [b"data: 12345678\n", b"\n"] * 3
    assert await events(ok) == [b"12345678"] * 3
    with pytest.raises(SSEError):
        await events([b"data: 1234\n", b"data: 56789\n", b"\n"])


def test_sse_error_is_a_value_error() -> None:
    assert issubclass(SSEError, ValueError)
