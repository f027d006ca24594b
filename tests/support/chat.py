"""Fakes around the chat service: an upstream and its streams, a sink that records
what the client was sent, and the real LedgerMeter over an in-memory store,
recording its settlements on the same timeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from teegate.apikeys import Principal
from teegate.billing import Hold, HoldRequest, LedgerMeter, Outcome, Settlement
from teegate.catalog import AttestationStatus, Catalog, CatalogModel
from teegate.chat import Answer, ChatRequest, ChatService, ResponseHead, parse_chat_request
from teegate.config import RequestDefaults
from teegate.errors import ServiceUnavailable
from teegate.ratelimit import LocalRateLimiter
from tests.support.ledger import MODEL, FakeStore

PRINCIPAL = Principal("key_1", 7, None)
CONTENT = orjson.dumps({"choices": [{"index": 0, "delta": {"content": "héllo"}}]})
USAGE = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
WHOLE = orjson.dumps(
    {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
     "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
)  # fmt: skip

Event = tuple[str, Any]


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


class FakeStream:
    """Replays socket reads; `stall` then waits for ever, as a silent upstream does."""

    def __init__(self, reads: list[list[bytes]], *, stall: bool = False) -> None:
        self.reads = reads
        self.stall = stall
        self.closed = self.released = False

    async def events(self) -> AsyncIterator[list[bytes]]:
        for read in self.reads:
            yield read
        if self.stall:
            await asyncio.Event().wait()

    def close(self) -> None:
        self.closed = True

    async def finish(self) -> None:
        self.released = True


class FakeUpstream:
    def __init__(
        self,
        *,
        stream: FakeStream | None = None,
        raw: bytes = WHOLE,
        error: BaseException | None = None,
    ) -> None:
        self.stream = stream or FakeStream([[CONTENT], [b"[DONE]"]])
        self.raw = raw
        self.error = error
        self.bodies: list[dict[str, Any]] = []

    async def complete(self, body: bytes, *, pin: bytes | None) -> tuple[bytes, dict[str, Any]]:
        self.bodies.append(orjson.loads(body))
        if self.error is not None:
            raise self.error
        parsed: dict[str, Any] = orjson.loads(self.raw)
        return self.raw, parsed

    async def open_stream(self, body: bytes, *, pin: bytes | None) -> FakeStream:
        self.bodies.append(orjson.loads(body))
        if self.error is not None:
            raise self.error
        return self.stream


class Passing:
    """An AttestationView under which every offer passes."""

    def status(self, offer: CatalogModel) -> AttestationStatus:
        return AttestationStatus(passed=True, mode="provider-asserted", header="verdict=ok")

    def distrust(self, upstream: str, reason: str) -> None:
        raise AssertionError("nothing here distrusts an upstream")

    async def reports(self, offer: CatalogModel, nonce: bytes | None) -> list[dict[str, Any]]:
        return []


class RecordingMeter:
    """The real meter over an in-memory store; each settlement lands on `events`."""

    def __init__(self, events: list[Event], *, fail_settle: bool = False) -> None:
        self.events = events
        self.store = FakeStore(10**12)
        self.ledger = LedgerMeter(self.store, hold_ttl_s=60)
        self.placed: list[HoldRequest] = []
        self.outcomes: list[Outcome] = []
        self.fail_settle = fail_settle
        self.settle_delay_s = 0.0

    async def place(self, request: HoldRequest) -> Hold:
        self.placed.append(request)
        return await self.ledger.place(request)

    async def settle(self, hold: Hold, outcome: Outcome) -> Settlement | None:
        self.outcomes.append(outcome)
        if self.fail_settle:
            raise ServiceUnavailable("the ledger is down")
        await asyncio.sleep(self.settle_delay_s)
        settlement = await self.ledger.settle(hold, outcome)
        self.events.append(("settled", outcome.status))
        return settlement

    def watch(self, hold: Hold, outcome: Outcome) -> None:
        self.ledger.watch(hold, outcome)


class RecordingSink:
    """What the client was sent. `fail_at` makes one call raise OSError, counting the
    start as 0 and each write after it from 1."""

    def __init__(self, events: list[Event], *, fail_at: int | None = None) -> None:
        self.events = events
        self.fail_at = fail_at
        self.bodies: list[bytes] = []

    async def start(self, length: int | None, head: ResponseHead | None = None) -> None:
        if self.fail_at == 0:
            raise OSError("the client went away")
        self.events.append(("start", length))

    async def write(self, body: bytes, more: bool) -> None:
        if self.fail_at == len(self.bodies) + 1:
            raise OSError("the client went away")
        self.bodies.append(body)
        self.events.append(("body", more))

    def close(self) -> None:
        self.events.append(("closed", None))


def a_request(*, stream: bool, include_usage: bool = False) -> ChatRequest:
    body: dict[str, Any] = {
        "model": MODEL.id,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "stream": stream,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return parse_chat_request(orjson.dumps(body), RequestDefaults())


def chat_service(upstream: FakeUpstream, meter: RecordingMeter) -> ChatService:
    catalog = Catalog()
    catalog.replace(MODEL.upstream, [MODEL])
    return ChatService(
        catalog, Passing(), {MODEL.upstream: upstream}, meter, limiter=LocalRateLimiter()
    )


async def an_answer(
    upstream: FakeUpstream, meter: RecordingMeter, *, stream: bool, include_usage: bool = False
) -> Answer:
    service = chat_service(upstream, meter)
    request = a_request(stream=stream, include_usage=include_usage)
    return await service.answer(PRINCIPAL, request, "req_1")
