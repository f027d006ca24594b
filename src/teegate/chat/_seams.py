"""What the chat service needs of its neighbours, as Protocols it owns: billing's
meter, an upstream and its streams, the web layer's side of an answer, the
operator's traces, and the Idempotency-Key a request carries, as the meter is given
it. Each is satisfied by its neighbour as is; none of them is imported here.
(Receipts is met by the receipts package, whose `Served` an answer fills in.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from hashlib import sha256
from typing import Any, Protocol

from teegate.billing import Hold, HoldRequest, Outcome, Settlement
from teegate.receipts import Served


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A client's Idempotency-Key and its request body, each as a SHA-256 (hex): the
    key scopes a retry to the account, the body tells a retry from a new request."""

    key_hash: str
    body_hash: str

    @classmethod
    def of(cls, key: str, body: bytes) -> Idempotency:
        return cls(sha256(key.encode()).hexdigest(), sha256(body).hexdigest())


class Meter(Protocol):
    """Place a hold before the upstream call; settle it once after the answer."""

    async def place(self, request: HoldRequest) -> Hold: ...

    async def settle(self, hold: Hold, outcome: Outcome) -> Settlement | None:
        """The settlement posted, or None if the hold was already resolved (the first
        resolution stands)."""
        ...

    def watch(self, hold: Hold, outcome: Outcome) -> None:
        """Checkpoint what `outcome` delivers on the hold's lease while it runs."""
        ...


class Receipts(Protocol):
    """Signs a receipt for every answer (met by `receipts.ReceiptService`)."""

    def allocate(self) -> str:
        """A receipt id, before the first byte: it goes out with the headers."""
        ...

    def issue(self, served: Served) -> None:
        """After the answer is sent and settled: build, sign and store it, off the
        request path. Never raises."""
        ...


class UpstreamStream(Protocol):
    """An open streamed completion."""

    def events(self) -> AsyncIterator[list[bytes]]:
        """The `data` of the events each socket read completes (never none)."""
        ...

    async def finish(self) -> None:
        """After [DONE]: read the response to its end and keep the connection."""
        ...

    def close(self) -> None:
        """Drop the connection (unless finished): the upstream stops generating."""
        ...


class Upstream(Protocol):
    async def complete(self, body: bytes, *, pin: bytes | None) -> tuple[bytes, dict[str, Any]]:
        """The whole completion: its bytes as sent, and their parse."""
        ...

    async def open_stream(self, body: bytes, *, pin: bytes | None) -> UpstreamStream: ...


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A response head the upstream chose (an encrypted answer's: its status, its
    EHBP nonce and content type), where the gateway's own would not do."""

    status: int
    headers: tuple[tuple[str, str], ...]
    length: int | None


class Sink(Protocol):
    """Where an answer is written: the web layer adapts it to its server."""

    def start(self, length: int | None, head: ResponseHead | None = None) -> Awaitable[None]:
        """Begin the response: a whole body of `length` bytes, or (None) a stream;
        with `head`, its status and content headers are the upstream's."""
        ...

    def write(self, body: bytes, more: bool) -> Awaitable[None]:
        """Send body bytes; `more=False` ends the body."""
        ...

    def close(self) -> None:
        """The body is over, sent or not; the settlement follows, and nothing may
        cancel it (a client that leaves now must not)."""
        ...


class Trace(Protocol):
    """Marks a step of a request (the gate) in the operator's traces. A step names the
    model, never content; the gateway hands one over only while tracing is on."""

    def step(self, name: str, model: str) -> AbstractContextManager[object]: ...


class NoTrace:
    """Tracing off: a step is one shared context manager that does nothing."""

    __slots__ = ()
    _NOTHING: AbstractContextManager[object] = contextlib.nullcontext()

    def step(self, name: str, model: str) -> AbstractContextManager[object]:
        return self._NOTHING


NO_TRACE = NoTrace()
