"""Server-sent events, decoded incrementally so a stream is relayed as it arrives.

The decoder is fed whatever byte chunks the socket delivers (usually one event
per chunk) and returns the events each completes: one plain call per socket
read, with no generator or readline in between, since this runs for every
chunk of every stream.
"""

from __future__ import annotations

from teegate.errors import SSEError

MAX_EVENT_BYTES = 4 * 1024 * 1024
"""The most `data` one event may carry by default; a larger one is an upstream fault."""


class SSEDecoder:
    """Feed it socket chunks; it returns the `data` payload of each completed event.
    Comments and other fields are dropped."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._buffer:
            chunk = self._buffer + chunk
        if b"\r" in chunk:  # CRLF, possibly split across chunks
            chunk = chunk.replace(b"\r\n", b"\n")
        *blocks, self._buffer = chunk.split(b"\n\n")
        limit = self._max_event_bytes
        if len(self._buffer) > 2 * limit + 1024:
            raise SSEError(f"an event is larger than {limit} bytes")
        events: list[bytes] = []
        for block in blocks:  # a loop, not a comprehension: no closure to build per chunk
            if (data := _event_data(block, limit)) is not None:
                events.append(data)
        return events

    def end(self) -> list[bytes]:
        """The stream ended: an unterminated last event still counts."""
        data = _event_data(self._buffer.rstrip(b"\n"), self._max_event_bytes)
        self._buffer = b""
        return [] if data is None else [data]


def _event_data(block: bytes, limit: int) -> bytes | None:
    """The joined `data` lines of one event, or None if it has none."""
    if block[:6] == b"data: " and b"\n" not in block:  # the usual event: one line
        if len(block) - 6 > limit:
            raise SSEError(f"an event is larger than {limit} bytes")
        return block[6:]
    data: list[bytes] = []
    size = 0
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].removeprefix(b" ")
            size += len(payload)
            if size > limit:
                raise SSEError(f"an event is larger than {limit} bytes")
            data.append(payload)
    return b"\n".join(data) if data else None
