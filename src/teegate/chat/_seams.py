"""What the chat service needs of its neighbours, as Protocols it owns: billing's
meter, an upstream and its streams, and the web layer's side of an answer.
Each is satisfied by its neighbour as is; none of them is imported here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from teegate.billing import Hold, HoldRequest, Outcome


class Meter(Protocol):
    """Place a hold before the upstream call; settle it once after the answer."""

    async def place(self, request: HoldRequest) -> Hold: ...

    async def settle(self, hold: Hold, outcome: Outcome) -> None: ...


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
