"""An answer that sends itself, then settles its hold.

The hold, committed before the upstream call, covers the charge until the
settlement, so no client waits for the second commit: the body goes out first
and the hold is settled after, exactly once, whether the body got out, the
write failed, the client left or nothing was ever sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
import structlog

from teegate.billing import Hold, Outcome
from teegate.catalog import Admitted
from teegate.chat._seams import Meter, Sink, UpstreamStream
from teegate.errors import InternalError, TeegateError, UpstreamError

log = structlog.get_logger("teegate.chat")

DONE = b"data: [DONE]\n\n"


class Answer(ABC):
    """What the route delivers, whole or streamed. `send` is called once."""

    __slots__ = ("_hold", "_meter", "_outcome", "admitted")

    concludes = False
    """True for an answer whose outcome needs `_conclude` after its body (a plain
    answer does not: it pays nothing for the hook)."""

    def __init__(self, admitted: Admitted, meter: Meter, hold: Hold, outcome: Outcome) -> None:
        self.admitted = admitted
        self._meter = meter
        self._hold = hold
        self._outcome = outcome

    async def send(self, sink: Sink) -> None:
        """Write the answer to `sink`; whatever happens, settle the hold after it."""
        try:
            await self._deliver(sink)
        finally:
            sink.close()  # first: a client leaving from now on must not cancel the settlement
            if self.concludes:
                with anyio.CancelScope(shield=True):
                    await self._conclude()
            await settle_after_answer(self._meter, self._hold, self._outcome)

    @abstractmethod
    async def _deliver(self, sink: Sink) -> None: ...

    async def _conclude(self) -> None:  # noqa: B027 - a hook, empty unless `concludes`
        """After the body, before the settlement: what the outcome still needs from
        the upstream (an encrypted stream's signed usage). Must not raise."""


class WholeAnswer(Answer):
    __slots__ = ("_raw",)

    def __init__(
        self, admitted: Admitted, meter: Meter, hold: Hold, raw: bytes, outcome: Outcome
    ) -> None:
        """`raw` is relayed as the upstream sent it; `outcome`, read from its parse
        (`Outcome.of_response`, `Outcome.of_embeddings`), is billed."""
        super().__init__(admitted, meter, hold, outcome)
        self._raw = raw

    async def _deliver(self, sink: Sink) -> None:
        await sink.start(len(self._raw))
        await sink.write(self._raw, False)


class StreamedAnswer(Answer):
    __slots__ = ("_include_usage", "_stream")

    def __init__(
        self,
        admitted: Admitted,
        meter: Meter,
        hold: Hold,
        stream: UpstreamStream,
        include_usage: bool,
    ) -> None:
        super().__init__(admitted, meter, hold, Outcome())
        self._stream = stream
        self._include_usage = include_usage

    async def _deliver(self, sink: Sink) -> None:
        try:
            await sink.start(None)
            await _relay(self._stream, self._include_usage, self._outcome, sink.write)
            await sink.write(b"", False)
        finally:
            self._stream.close()


async def _relay(
    stream: UpstreamStream,
    include_usage: bool,
    outcome: Outcome,
    write: Callable[[bytes, bool], Awaitable[None]],
) -> None:
    """Forward events as they arrive, those of one socket read in one write; keep
    the usage chunk unless it was asked for."""
    pending = b""
    try:
        async for events in stream.events():
            for data in events:
                if data == b"[DONE]":
                    outcome.status = "ok"
                    await write(pending + DONE, True)
                    await stream.finish()
                    return
                chunk = _parse_chunk(data)
                if outcome.observe_chunk(chunk) and not include_usage:
                    continue
                pending += b"data: " + data + b"\n\n"
            if pending:
                out, pending = pending, b""
                await write(out, True)
        raise UpstreamError("the upstream ended the stream before it was complete")
    except TeegateError as exc:
        outcome.status = "upstream_error"
        await write(pending + b"data: " + exc.body() + b"\n\n", True)


def _parse_chunk(data: bytes) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("the upstream sent a stream event that is not JSON") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError("the upstream sent a stream event that is not an object")
    if "error" in chunk:
        raise UpstreamError("the upstream reported an error mid-stream")
    return chunk


async def settle_after_answer(meter: Meter, hold: Hold, outcome: Outcome) -> None:
    """Never raises: the answer is out by now. A settlement that fails leaves the
    hold open, and the reaper posts it at the held amount, as after a crash."""
    try:
        await settle(meter, hold, outcome)
    except TeegateError as exc:
        log.error(
            "settle_failed",
            request_id=hold.request_id,
            error=type(exc).__name__,
            detail=exc.message,
        )


async def settle(meter: Meter, hold: Hold, outcome: Outcome) -> None:
    """Shielded: a client that leaves mid-request must not cancel its own settlement."""
    with anyio.CancelScope(shield=True):
        try:
            await meter.settle(hold, outcome)
        except TeegateError:
            raise
        except Exception as exc:
            raise InternalError("settling the request's charge failed") from exc
