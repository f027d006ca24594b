"""Server-sent events, parsed incrementally so a stream is relayed as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

MAX_EVENT_BYTES = 4 * 1024 * 1024


class SSEError(ValueError):
    pass


async def iter_sse_data(lines: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Yield the `data` payload of each event; comments and other fields are dropped."""
    data: list[bytes] = []
    size = 0
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data, size = [], 0
            continue
        if line.startswith(b"data:"):
            payload = line[5:].removeprefix(b" ")
            size += len(payload)
            if size > MAX_EVENT_BYTES:
                raise SSEError(f"an event is larger than {MAX_EVENT_BYTES} bytes")
            data.append(payload)
    if data:
        yield b"\n".join(data)
