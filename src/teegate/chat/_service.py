"""A chat completion from admission to the last byte.

Order is the contract: the gate admits, the meter reserves, and only then does
a byte go upstream; whatever happens after, the reservation is settled exactly
once from what was actually delivered.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import orjson

from teegate.auth import Principal
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
    admitted: Admitted
    raw: bytes
    """The upstream's answer as it sent it: parsed for billing, relayed unchanged."""


@dataclass(slots=True)
class StreamedCompletion:
    """A relay that settles exactly once, whether it ran to the end, was cut short,
    or was never started at all (an async generator's `finally` only runs if it began)."""

    admitted: Admitted
    chunks: AsyncGenerator[bytes, None]
    _stream: UpstreamStream
    _reservation: Reservation | None
    started: list[bool]

    async def aclose(self) -> None:
        await self.chunks.aclose()
        if not self.started[0]:
            self.started[0] = True
            self._stream.close()
            await _settle(self._reservation, Outcome("client_gone"))


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
        await _settle(reservation, Outcome("ok", tally))
        return Completion(admitted, answer.raw)

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
        started = [False]
        chunks = _relay(stream, request.include_usage, reservation, started)
        return StreamedCompletion(admitted, chunks, stream, reservation, started)

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
    stream: UpstreamStream,
    include_usage: bool,
    reservation: Reservation | None,
    started: list[bool],
) -> AsyncGenerator[bytes, None]:
    """Forward events as they arrive, those of one socket read in one write; keep
    the usage chunk unless it was asked for."""
    started[0] = True
    tally = Tally()
    status: Status = "client_gone"
    pending = b""
    try:
        async for events in stream.events():
            for data in events:
                if data == b"[DONE]":
                    status = "ok"
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
        status = "upstream_error"
        yield pending + b"data: " + exc.body() + b"\n\n"
    finally:
        stream.close()
        await _settle(reservation, Outcome(status, tally))


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
