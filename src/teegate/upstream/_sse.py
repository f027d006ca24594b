"""Server-sent events, decoded incrementally so a stream is relayed as it arrives.

The decoder is fed whatever byte chunks the socket delivers (usually one event
per chunk) and returns the events each completes: one plain call per socket
read, with no generator or readline in between, since this runs for every
chunk of every stream.
"""

from __future__ import annotations

MAX_EVENT_BYTES = 4 * 1024 * 1024
"""The most `data` one event may carry; a larger one is an upstream fault."""


class SSEError(ValueError):
    pass


class SSEDecoder:
    """Feed it socket chunks; it returns the `data` payload of each completed event.
    Comments and other fields are dropped."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:  # CRLF, possibly split across chunks
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) != -1:
            data = _event_data(buffer[start:end])
            if data is not None:
                events.append(data)
            start = end + 2
        self._buffer = buffer[start:]
        if len(self._buffer) > 2 * MAX_EVENT_BYTES + 1024:
            raise SSEError(f"an event is larger than {MAX_EVENT_BYTES} bytes")
        return events

    def end(self) -> list[bytes]:
        """The stream ended: an unterminated last event still counts."""
        data = _event_data(self._buffer.rstrip(b"\n"))
        self._buffer = b""
        return [] if data is None else [data]


def _event_data(block: bytes) -> bytes | None:
    """The joined `data` lines of one event, or None if it has none."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the usual event: one line
        return _within_limit(block[6:])
    data: list[bytes] = []
    size = 0
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].removeprefix(b" ")
            size += len(payload)
            _within_limit(payload, size)
            data.append(payload)
    return b"\n".join(data) if data else None


def _within_limit(payload: bytes, size: int | None = None) -> bytes:
    if (len(payload) if size is None else size) > MAX_EVENT_BYTES:
        raise SSEError(f"an event is larger than {MAX_EVENT_BYTES} bytes")
    return payload
