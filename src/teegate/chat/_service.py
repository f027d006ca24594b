"""A chat completion from admission to the last byte.

Order is the contract: the gate admits, the meter reserves, and only then does
a byte go upstream; whatever happens after, the reservation is settled exactly
once from what was actually delivered.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import orjson
import structlog

from teegate.apikeys import Principal
from teegate.catalog import Admitted, AttestationView, Catalog, admit
from teegate.chat._outcome import Outcome, Status, Tally
from teegate.chat._request import ChatRequest, check_against_model
from teegate.errors import (
    InternalError,
    ModelNotConfidential,
    TeegateError,
    UpstreamError,
    UpstreamKeyChanged,
)
from teegate.upstream import UpstreamClient, UpstreamStream

log = structlog.get_logger("teegate.chat")

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Ticket:
    """Everything a meter needs to price a request before it runs."""

    request_id: str
    principal: Principal
    admitted: Admitted
    request: ChatRequest


class Reservation(Protocol):
    async def settle(self, outcome: Outcome) -> None: ...


class Meter(Protocol):
    """Billing's seam: reserve before the upstream call, settle after it."""

    async def reserve(self, ticket: Ticket) -> Reservation: ...


@dataclass(frozen=True, slots=True)
class Completion:
    """An answer whose charge is settled after it is sent: its hold, committed before
    the upstream call, already covers it, so the client need not wait for the second
    commit. Whoever sends the answer calls `settle` once, sent or not."""

    admitted: Admitted
    raw: bytes
    """The upstream's answer as it sent it: parsed for billing, relayed unchanged."""
    request_id: str
    _reservation: Reservation | None
    _outcome: Outcome

    async def settle(self) -> None:
        await _settle_after_answer(self._reservation, self._outcome, self.request_id)


@dataclass(slots=True)
class Relayed:
    """What a relay has delivered so far; its settlement reads it once the body ended."""

    status: Status = "client_gone"
    tally: Tally = field(default_factory=Tally)


@dataclass(slots=True)
class StreamedCompletion:
    """A relay whose charge is settled once, after its body has ended, however it
    ended: run to [DONE], cut short, or never started. Whoever sends the body
    calls `aclose` once it is over."""

    admitted: Admitted
    chunks: AsyncGenerator[bytes, None]
    request_id: str
    _stream: UpstreamStream
    _reservation: Reservation | None
    _relayed: Relayed
    _settled: bool = False

    async def aclose(self) -> None:
        await self.chunks.aclose()
        self._stream.close()  # a relay that never started has not closed it
        if not self._settled:
            self._settled = True
            outcome = Outcome(self._relayed.status, self._relayed.tally)
            await _settle_after_answer(self._reservation, outcome, self.request_id)


class ChatService:
    def __init__(
        self,
        catalog: Catalog,
        attestation: AttestationView,
        upstreams: Mapping[str, UpstreamClient],
        meter: Meter | None = None,
    ) -> None:
        self._catalog = catalog
        self._attestation = attestation
        self._upstreams = upstreams
        self._meter = meter

    def admit(self, request: ChatRequest) -> Admitted:
        admitted = admit(self._catalog, self._attestation, request.model, request.needs)
        check_against_model(request, admitted.model)
        return admitted

    async def complete(
        self, principal: Principal, request: ChatRequest, request_id: str
    ) -> Completion:
        admitted = self.admit(request)
        reservation = await self._reserve(request_id, principal, admitted, request)
        client = self._upstreams[admitted.model.upstream]
        try:
            answer = await client.complete(
                orjson.dumps(request.body), pin=admitted.attestation.tls_pin
            )
        except BaseException as exc:
            await _settle(reservation, Outcome("upstream_error"))
            self._refuse_if_key_changed(admitted, exc)
            raise
        tally = Tally()
        tally.observe_response(answer.body)
        return Completion(admitted, answer.raw, request_id, reservation, Outcome("ok", tally))

    async def stream(
        self, principal: Principal, request: ChatRequest, request_id: str
    ) -> StreamedCompletion:
        admitted = self.admit(request)
        reservation = await self._reserve(request_id, principal, admitted, request)
        client = self._upstreams[admitted.model.upstream]
        upstream_body = dict(request.body)
        upstream_body["stream_options"] = {
            **(request.body.get("stream_options") or {}),
            "include_usage": True,
        }
        try:
            stream = await client.open_stream(
                orjson.dumps(upstream_body), pin=admitted.attestation.tls_pin
            )
        except BaseException as exc:
            await _settle(reservation, Outcome("upstream_error"))
            self._refuse_if_key_changed(admitted, exc)
            raise
        relayed = Relayed()
        chunks = _relay(stream, request.include_usage, relayed)
        return StreamedCompletion(admitted, chunks, request_id, stream, reservation, relayed)

    def _refuse_if_key_changed(self, admitted: Admitted, exc: BaseException) -> None:
        """A key other than the attested one means the attestation no longer holds:
        nothing was sent (the handshake failed), the verdict is dropped, and the
        caller hears model_not_confidential while the upstream is re-attested."""
        if isinstance(exc, UpstreamKeyChanged):
            self._attestation.distrust(admitted.model.upstream, str(exc))
            raise ModelNotConfidential(
                f"Model '{admitted.model.id}' is not Confidential Compute right now: "
                "its upstream's TLS key no longer matches its attestation."
            ) from exc

    async def _reserve(
        self, request_id: str, principal: Principal, admitted: Admitted, request: ChatRequest
    ) -> Reservation | None:
        if self._meter is None:
            return None
        return await self._meter.reserve(Ticket(request_id, principal, admitted, request))


async def _relay(
    stream: UpstreamStream, include_usage: bool, relayed: Relayed
) -> AsyncGenerator[bytes, None]:
    """Forward events as they arrive, those of one socket read in one write; keep
    the usage chunk unless it was asked for."""
    tally = relayed.tally
    pending = b""
    try:
        async for events in stream.events():
            for data in events:
                if data == b"[DONE]":
                    relayed.status = "ok"
                    yield pending + DONE
                    await stream.finish()
                    return
                chunk = _parse_chunk(data)
                if tally.observe_chunk(chunk) and not include_usage:
                    continue
                pending += b"data: " + data + b"\n\n"
            if pending:
                out, pending = pending, b""
                yield out
        raise UpstreamError("the upstream ended the stream before it was complete")
    except TeegateError as exc:
        relayed.status = "upstream_error"
        yield pending + b"data: " + exc.body() + b"\n\n"
    finally:
        stream.close()


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


async def _settle_after_answer(
    reservation: Reservation | None, outcome: Outcome, request_id: str
) -> None:
    """Never raises: the answer is out by now. A settlement that fails leaves the
    hold open, and the reaper posts it at the held amount, as after a crash."""
    try:
        await _settle(reservation, outcome)
    except TeegateError as exc:
        log.error(
            "settle_failed", request_id=request_id, error=type(exc).__name__, detail=exc.message
        )


async def _settle(reservation: Reservation | None, outcome: Outcome) -> None:
    """Shielded: a client that leaves mid-request must not cancel its own settlement."""
    if reservation is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await reservation.settle(outcome)
        except TeegateError:
            raise
        except Exception as exc:
            raise InternalError("settling the request's charge failed") from exc
