"""Server-sent events for a streamed answer: pacing, and the faults that break streams.

Chunks are produced and sent one at a time through Starlette's
StreamingResponse, which cancels this generator as soon as the client
disconnects, so an abandoned stream stops generating at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from teegate.devstack._config import DevstackConfig
from teegate.devstack._faults import DROP_MID_STREAM, GARBAGE_SSE, SLOW_FIRST_TOKEN, FaultState

GARBAGE_EVENT = b"data: {not json\n\n"
DONE_EVENT = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class SimulatedDropError(Exception):
    """Raised inside the body iterator: the ASGI server then aborts the connection.

    Raising (rather than returning) is what makes every ASGI server close the
    socket mid-body, so the client sees an incomplete chunked transfer instead
    of a stream that merely ended early.
    """


@dataclass(frozen=True)
class StreamPlan:
    """Timing and faults for one stream, fixed when the request arrives."""

    first_delay_s: float
    pace_s: float
    drop_at: int | None
    garbage_at: int | None

    @classmethod
    def for_stream(cls, faults: FaultState, config: DevstackConfig, total: int) -> StreamPlan:
        """Aim drop and garbage at the middle: after the role chunk, before the finish."""
        middle = max(1, total // 2)
        return cls(
            first_delay_s=config.first_token_delay_s if faults.is_on(SLOW_FIRST_TOKEN) else 0.0,
            pace_s=config.chunk_delay_s,
            drop_at=middle if faults.is_on(DROP_MID_STREAM) else None,
            garbage_at=middle if faults.is_on(GARBAGE_SSE) else None,
        )


def sse_response(chunks: Iterator[dict[str, Any]], plan: StreamPlan) -> StreamingResponse:
    return StreamingResponse(
        sse_events(chunks, plan), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def sse_events(chunks: Iterator[dict[str, Any]], plan: StreamPlan) -> AsyncIterator[bytes]:
    """`data: {json}` events, paced by `plan`, ending in `data: [DONE]` unless dropped."""
    if plan.first_delay_s > 0:
        await asyncio.sleep(plan.first_delay_s)
    for index, chunk in enumerate(chunks):
        if index > 0 and plan.pace_s > 0:
            await asyncio.sleep(plan.pace_s)
        if index == plan.drop_at:
            raise SimulatedDropError("devstack fault drop-mid-stream: aborting the connection")
        if index == plan.garbage_at:
            yield GARBAGE_EVENT
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield DONE_EVENT
