"""Server-sent events, parsed incrementally so a stream is relayed as it arrives.

The input is whatever byte chunks the socket delivers (usually one event per
chunk), not lines: one Python step per chunk instead of two readline calls per
event, which is most of a relay's per-chunk cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

MAX_EVENT_BYTES = 4 * 1024 * 1024
"""The most `data` one event may carry; a larger one is an upstream fault."""


class SSEError(ValueError):
    pass


async def iter_sse_data(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Yield the `data` payload of each event; comments and other fields are dropped."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:  # CRLF, possibly split across chunks
            buffer = buffer.replace(b"\r\n", b"\n")
        while (end := buffer.find(b"\n\n")) != -1:
            block, buffer = buffer[:end], buffer[end + 2 :]
            data = _event_data(block)
            if data is not None:
                yield data
        if len(buffer) > 2 * MAX_EVENT_BYTES + 1024:
            raise SSEError(f"an event is larger than {MAX_EVENT_BYTES} bytes")
    data = _event_data(buffer.rstrip(b"\n"))
    if data is not None:
        yield data


def _event_data(block: bytes) -> bytes | None:
    """The joined `data` lines of one event, or None if it has none."""
    data: list[bytes] = []
    size = 0
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].removeprefix(b" ")
            size += len(payload)
            if size > MAX_EVENT_BYTES:
                raise SSEError(f"an event is larger than {MAX_EVENT_BYTES} bytes")
            data.append(payload)
    return b"\n".join(data) if data else None
