"""An answer that sends itself, then settles its hold.

The hold, committed before the upstream call, covers the charge until the
settlement, so no client waits for the second commit: the body goes out first
and the hold is settled after, exactly once, whether the body got out, the
write failed, the client left or nothing was ever sent.

An answer that is witnessed (`Answer.witness`, before it is sent) also gets a signed
receipt: the request's bytes are hashed then, the bytes written to the sink as they
pass (whatever kind of answer writes them: a relayed JSON body, an SSE stream, an
encrypted body), and the receipt is issued after the settlement, from it.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import orjson
import structlog

from teegate.billing import Hold, Outcome, Settlement
from teegate.catalog import Admitted
from teegate.chat._seams import Meter, Receipts, ResponseHead, Sink, UpstreamStream
from teegate.errors import InternalError, TeegateError, UpstreamError
from teegate.receipts import Served

log = structlog.get_logger("teegate.chat")

DONE = b"data: [DONE]\n\n"


class Answer(ABC):
    """What the route delivers, whole or streamed. `send` is called once."""

    __slots__ = ("_hold", "_meter", "_outcome", "_witness", "admitted")

    concludes = False
    """True for an answer whose outcome needs `_conclude` after its body (a plain
    answer does not: it pays nothing for the hook)."""

    def __init__(self, admitted: Admitted, meter: Meter, hold: Hold, outcome: Outcome) -> None:
        self.admitted = admitted
        self._meter = meter
        self._hold = hold
        self._outcome = outcome
        self._witness: _Witness | None = None

    def witness(
        self,
        receipts: Receipts,
        request_body: bytes,
        policy: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign a receipt for this answer once it is sent: `request_body` is the exact
        request bytes received, `policy` the key's attestation policy. The receipt id,
        for the headers."""
        self._witness = _Witness(receipts, receipts.allocate(), request_body, policy)
        return self._witness.receipt_id

    @property
    def receipt_id(self) -> str | None:
        return self._witness.receipt_id if self._witness is not None else None

    async def send(self, sink: Sink) -> None:
        """Write the answer to `sink`; whatever happens, settle the hold after it."""
        witness = self._witness
        if witness is not None:
            sink = witness.hashing(sink)
        try:
            await self._deliver(sink)
        finally:
            sink.close()  # first: a client leaving from now on must not cancel the settlement
            if self.concludes:
                with anyio.CancelScope(shield=True):
                    await self._conclude()
            settlement = await settle_after_answer(self._meter, self._hold, self._outcome)
            if witness is not None and settlement is not None:
                witness.issue(self.admitted, settlement, self._outcome)

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
        meter.watch(hold, self._outcome)  # a long stream's lease carries its progress

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


async def settle_after_answer(meter: Meter, hold: Hold, outcome: Outcome) -> Settlement | None:
    """Never raises: the answer is out by now. A settlement the database cannot take
    waits in the meter, which retries it; any other failure leaves the hold open, and
    the reaper settles it from its last checkpoint, as after a crash."""
    try:
        return await settle(meter, hold, outcome)
    except TeegateError as exc:
        log.error(
            "settle_failed",
            request_id=hold.request_id,
            error=type(exc).__name__,
            detail=exc.message,
        )
        return None


async def settle(meter: Meter, hold: Hold, outcome: Outcome) -> Settlement | None:
    """Shielded: a client that leaves mid-request must not cancel its own settlement."""
    settlement: Settlement | None = None
    with anyio.CancelScope(shield=True):
        try:
            settlement = await meter.settle(hold, outcome)
        except TeegateError:
            raise
        except Exception as exc:
            raise InternalError("settling the request's charge failed") from exc
    return settlement


class _Witness:
    """The receipt of one answer in the making: its id, the request's hash, and the
    running hash of every byte written to the client."""

    __slots__ = ("_policy", "_receipts", "_request_sha256", "_sent", "_sent_bytes", "receipt_id")

    def __init__(
        self,
        receipts: Receipts,
        receipt_id: str,
        request_body: bytes,
        policy: Mapping[str, Any] | None,
    ) -> None:
        self._receipts = receipts
        self.receipt_id = receipt_id
        self._request_sha256 = hashlib.sha256(request_body).digest()
        self._policy = policy
        self._sent = hashlib.sha256()
        self._sent_bytes = 0

    def hashing(self, sink: Sink) -> Sink:
        return _HashingSink(sink, self)

    def saw(self, body: bytes) -> None:
        self._sent.update(body)
        self._sent_bytes += len(body)

    def issue(self, admitted: Admitted, settlement: Settlement, outcome: Outcome) -> None:
        self._receipts.issue(
            Served(
                receipt_id=self.receipt_id,
                request_sha256=self._request_sha256,
                response_sha256=self._sent.digest(),
                response_bytes=self._sent_bytes,
                admitted=admitted,
                settlement=settlement,
                usage=outcome.usage,
                policy=self._policy,
                finished_ms=time.time_ns() // 1_000_000,
            )
        )


class _HashingSink:
    """The sink, with every byte written to it hashed on the way."""

    __slots__ = ("_sink", "_witness")

    def __init__(self, sink: Sink, witness: _Witness) -> None:
        self._sink = sink
        self._witness = witness

    def start(self, length: int | None, head: ResponseHead | None = None) -> Awaitable[None]:
        return self._sink.start(length, head)

    def write(self, body: bytes, more: bool) -> Awaitable[None]:
        self._witness.saw(body)
        return self._sink.write(body, more)

    def close(self) -> None:
        self._sink.close()
