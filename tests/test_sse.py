"""upstream/_sse.py: the `data` of each server-sent event, from chunks as they arrive."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from teegate.upstream import MAX_EVENT_BYTES, SSEDecoder, SSEError


def events(chunks: Iterable[bytes], max_event_bytes: int = MAX_EVENT_BYTES) -> list[bytes]:
    decoder = SSEDecoder(max_event_bytes)
    decoded = [data for chunk in chunks for data in decoder.feed(chunk)]
    return decoded + decoder.end()


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
def test_decoded_events(lines: list[bytes], expected: list[bytes]) -> None:
    assert events(lines) == expected


def test_events_come_out_of_the_chunk_that_completes_them() -> None:
    """Each event is relayed at its blank line, before the next chunk is read."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\ndata: tw") == [b"one"]
    assert decoder.feed(b"o\n\ndata: three\n\n") == [b"two", b"three"]
    assert decoder.end() == []


def test_event_at_the_size_limit_passes() -> None:
    limit = MAX_EVENT_BYTES
    half = b"x" * (limit // 2)
    (data,) = events([b"data: " + half + b"\n", b"data: " + half + b"\n", b"\n"])
    assert len(data) == limit + 1  # two halves and the joining newline


def test_oversize_event_is_refused() -> None:
    limit = MAX_EVENT_BYTES
    half = b"x" * (limit // 2)
    with pytest.raises(SSEError, match=str(limit)):
        events([b"data: " + half + b"\n", b"data: " + half + b"x\n", b"\n"])


def test_the_limit_is_per_event() -> None:
    ok = [b"data: 12345678\n", b"\n"] * 3
    assert events(ok, max_event_bytes=8) == [b"12345678"] * 3
    with pytest.raises(SSEError):
        events([b"data: 1234\n", b"data: 56789\n", b"\n"], max_event_bytes=8)
    with pytest.raises(SSEError):  # one line, as most events are
        events([b"data: 123456789\n\n"], max_event_bytes=8)


def test_sse_error_is_a_value_error() -> None:
    assert issubclass(SSEError, ValueError)
