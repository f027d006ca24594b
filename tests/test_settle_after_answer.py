"""The answer first, its settlement after: the hold (committed before the upstream
call) covers the charge meanwhile, so no client waits for the second commit, and
the hold is settled exactly once whether the answer got out, the write failed,
the client left or nothing was sent at all."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from starlette.types import Message
from structlog.testing import capture_logs

from teegate.api import AnswerResponse
from teegate.billing import Rates
from teegate.catalog import Catalog
from teegate.chat import ChatService
from teegate.errors import UpstreamError
from tests.support.chat import (
    CONTENT,
    PRINCIPAL,
    WHOLE,
    Event,
    FakeStream,
    FakeUpstream,
    Passing,
    RecordingMeter,
    RecordingSink,
    a_request,
    an_answer,
    chat_service,
)
from tests.support.ledger import MODEL

# through the chat service's Sink ------------------------------------------------------------


async def test_a_whole_answer_is_sent_before_its_settlement() -> None:
    events: list[Event] = []
    meter = RecordingMeter(events)
    answer = await an_answer(FakeUpstream(), meter, stream=False)
    sink = RecordingSink(events)
    await answer.send(sink)
    assert events == [("start", len(WHOLE)), ("body", False), ("closed", None), ("settled", "ok")]
    assert sink.bodies == [WHOLE]
    [settled] = meter.store.settled
    assert (settled.settled_by, settled.prompt_tokens, settled.completion_tokens) == ("usage", 3, 1)


async def test_a_whole_answer_the_client_never_got_is_settled_all_the_same() -> None:
    events: list[Event] = []
    meter = RecordingMeter(events)
    answer = await an_answer(FakeUpstream(), meter, stream=False)
    with pytest.raises(OSError):
        await answer.send(RecordingSink(events, fail_at=1))
    assert events == [("start", len(WHOLE)), ("closed", None), ("settled", "ok")]
    assert len(meter.store.settled) == 1


async def test_a_stream_ends_its_body_before_its_settlement() -> None:
    events: list[Event] = []
    stream = FakeStream([[CONTENT], [b"[DONE]"]])
    answer = await an_answer(FakeUpstream(stream=stream), RecordingMeter(events), stream=True)
    await answer.send(RecordingSink(events))
    assert events == [
        ("start", None),
        ("body", True),
        ("body", True),
        ("body", False),
        ("closed", None),
        ("settled", "ok"),
    ]
    assert stream.released and stream.closed


async def test_a_stream_cut_by_a_failed_write_is_settled_once_for_what_was_sent() -> None:
    events: list[Event] = []
    meter = RecordingMeter(events)
    stream = FakeStream([[CONTENT], [CONTENT], [b"[DONE]"]])
    answer = await an_answer(FakeUpstream(stream=stream), meter, stream=True)
    with pytest.raises(OSError):
        await answer.send(RecordingSink(events, fail_at=2))
    assert events == [("start", None), ("body", True), ("closed", None), ("settled", "client_gone")]
    assert stream.closed and not stream.released
    [settled] = meter.store.settled
    assert settled.settled_by == "fallback"  # billed for the bytes that were read


@pytest.mark.parametrize("stream", [True, False])
async def test_an_answer_never_started_is_settled_once(stream: bool) -> None:
    events: list[Event] = []
    meter = RecordingMeter(events)
    upstream = FakeUpstream()
    answer = await an_answer(upstream, meter, stream=stream)
    with pytest.raises(OSError):
        await answer.send(RecordingSink(events, fail_at=0))
    status = "client_gone" if stream else "ok"  # a whole answer was delivered upstream
    assert events == [("closed", None), ("settled", status)]
    assert len(meter.store.settled) == 1
    assert upstream.stream.closed is stream


async def test_a_failed_upstream_call_releases_its_hold_and_gives_no_answer() -> None:
    events: list[Event] = []
    meter = RecordingMeter(events)
    with pytest.raises(UpstreamError):
        await an_answer(FakeUpstream(error=UpstreamError("down")), meter, stream=True)
    assert events == [("settled", "upstream_error")]
    [settled] = meter.store.settled
    assert (settled.settled_by, settled.cost_nano) == ("void", 0)


async def test_a_settlement_that_fails_after_the_answer_is_logged_not_raised() -> None:
    events: list[Event] = []
    answer = await an_answer(FakeUpstream(), RecordingMeter(events, fail_settle=True), stream=False)
    with capture_logs() as logs:
        await answer.send(RecordingSink(events))
    [entry] = [e for e in logs if e["event"] == "settle_failed"]
    assert (entry["request_id"], entry["error"]) == ("req_1", "ServiceUnavailable")


async def test_the_hold_is_placed_at_the_admitted_marked_up_price() -> None:
    meter = RecordingMeter([])
    await an_answer(FakeUpstream(), meter, stream=False)
    [placed] = meter.placed
    assert placed.rates == Rates(MODEL.price.prompt, MODEL.price.completion)
    assert (placed.account_id, placed.key_id, placed.model) == (7, "key_1", MODEL.id)


def test_a_chat_service_cannot_be_built_without_a_meter() -> None:
    assert inspect.signature(ChatService).parameters["meter"].default is inspect.Parameter.empty
    with pytest.raises(TypeError):
        ChatService(Catalog(), Passing(), {})  # type: ignore[call-arg]


# over ASGI ----------------------------------------------------------------------------------


class Client:
    """An ASGI client on the shared timeline; it can leave once it has read `leave_after` bodies."""

    def __init__(self, events: list[Event], *, leave_after: int | None = None) -> None:
        self.events = events
        self.leave_after = leave_after
        self.bodies = 0
        self.left = asyncio.Event()
        if leave_after == 0:
            self.left.set()
        self.start: Message = {}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            self.events.append(("start", None))
            return
        self.bodies += 1
        self.events.append(("body", message["more_body"]))
        if self.bodies == self.leave_after:
            self.left.set()

    async def receive(self) -> Message:
        await self.left.wait()
        return {"type": "http.disconnect"}


async def respond(
    meter: RecordingMeter, client: Client, upstream: FakeUpstream, *, stream: bool
) -> None:
    """The chat service's answer, sent by AnswerResponse in a task of its own (as a
    server runs it)."""
    answer = await chat_service(upstream, meter).answer(
        PRINCIPAL, a_request(stream=stream), "req_1"
    )
    response = AnswerResponse(answer, {"X-RateLimit-Limit-Requests": "60"})
    await asyncio.ensure_future(response({"type": "http"}, client.receive, client.send))


@pytest.mark.parametrize("sent", [0, 1])
async def test_a_client_leaving_mid_stream_stops_the_relay_and_settles_once(sent: int) -> None:
    """The upstream goes silent after `sent` reads: only the client's leaving ends it."""
    events: list[Event] = []
    meter = RecordingMeter(events)
    stream = FakeStream([[CONTENT]] * sent, stall=True)
    await respond(meter, Client(events, leave_after=sent), FakeUpstream(stream=stream), stream=True)
    assert events == [("start", None), *[("body", True)] * sent, ("settled", "client_gone")]
    assert stream.closed
    [settled] = meter.store.settled
    assert settled.settled_by == ("fallback" if sent else "void")


async def test_a_client_leaving_after_its_answer_cannot_cancel_the_settlement() -> None:
    events: list[Event] = []
    meter = RecordingMeter(events)
    meter.settle_delay_s = 0.05  # time for a disconnect watch to fire, were it still running
    client = Client(events, leave_after=3)  # at the end of the body
    await respond(meter, client, FakeUpstream(), stream=True)
    assert events[-2:] == [("body", False), ("settled", "ok")]
    assert len(meter.store.settled) == 1


async def test_a_whole_answer_carries_its_length_and_attestation_headers() -> None:
    events: list[Event] = []
    client = Client(events)
    await respond(RecordingMeter(events), client, FakeUpstream(), stream=False)
    headers = dict(client.start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(WHOLE)).encode()
    assert headers[b"x-tee-attestation"] == b"verdict=ok"
    assert headers[b"x-ratelimit-limit-requests"] == b"60"
    assert events == [("start", None), ("body", False), ("settled", "ok")]
