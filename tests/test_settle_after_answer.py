"""The answer first, its settlement after: the hold (committed before the upstream
call) covers the charge meanwhile, so no client waits for the second commit, and
the settlement still runs exactly once whether the answer got out or not."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
import pytest
from structlog.testing import capture_logs

from teegate.api._streaming import SSEResponse
from teegate.api.chat import SettledAfterSending
from teegate.catalog import Admitted, AttestationStatus
from teegate.chat import Completion, Outcome, StreamedCompletion, Tally
from teegate.chat._service import Relayed, _relay
from teegate.errors import ServiceUnavailable
from teegate.upstream import UpstreamStream
from tests.test_billing_rules import MODEL
from tests.test_chat_relay import FakeStream

ADMITTED = Admitted(MODEL, AttestationStatus(passed=True, mode="provider-asserted"))
CONTENT = orjson.dumps({"choices": [{"index": 0, "delta": {"content": "hi"}}]})


class Journal:
    """One timeline for what the client was sent and when the charge was settled."""

    def __init__(self, *, fail_send: bool = False, fail_settle: bool = False) -> None:
        self.events: list[Any] = []
        self.fail_send = fail_send
        self.fail_settle = fail_settle

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail_send and message["type"] == "http.response.body":
            raise OSError("the client went away")
        self.events.append((message["type"], message.get("more_body", False)))

    async def settle(self, outcome: Outcome) -> None:
        if self.fail_settle:
            raise ServiceUnavailable("the ledger is down")
        self.events.append(("settled", outcome.status))


async def never_disconnects() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def a_completion(journal: Journal) -> Completion:
    return Completion(ADMITTED, b'{"id": "x"}', "req_1", journal, Outcome("ok", Tally()))


async def test_the_answer_is_sent_before_its_settlement() -> None:
    journal = Journal()
    await SettledAfterSending(a_completion(journal), {})(
        {"type": "http"}, never_disconnects, journal.send
    )
    assert journal.events == [
        ("http.response.start", False),
        ("http.response.body", False),
        ("settled", "ok"),
    ]


async def test_an_answer_the_client_never_got_is_settled_all_the_same() -> None:
    journal = Journal(fail_send=True)
    with pytest.raises(OSError):
        await SettledAfterSending(a_completion(journal), {})(
            {"type": "http"}, never_disconnects, journal.send
        )
    assert journal.events[-1] == ("settled", "ok")


async def test_a_settlement_that_fails_after_the_answer_is_logged_not_raised() -> None:
    journal = Journal(fail_settle=True)
    with capture_logs() as logs:
        await a_completion(journal).settle()
    [entry] = [e for e in logs if e["event"] == "settle_failed"]
    assert (entry["request_id"], entry["error"]) == ("req_1", "ServiceUnavailable")


def a_stream(journal: Journal, reads: list[list[bytes]]) -> tuple[StreamedCompletion, FakeStream]:
    stream, relayed = FakeStream(reads), Relayed()
    upstream = cast(UpstreamStream, stream)
    chunks = _relay(upstream, False, relayed)
    return StreamedCompletion(ADMITTED, chunks, "req_1", upstream, journal, relayed), stream


async def test_a_stream_ends_its_body_before_its_settlement() -> None:
    journal = Journal()
    streamed, stream = a_stream(journal, [[CONTENT], [b"[DONE]"]])
    await SSEResponse(streamed, {})({"type": "http"}, never_disconnects, journal.send)
    assert journal.events == [
        ("http.response.start", False),
        ("http.response.body", True),
        ("http.response.body", True),
        ("http.response.body", False),
        ("settled", "ok"),
    ]
    assert stream.closed


async def test_a_stream_never_started_settles_as_client_gone_and_closes_its_upstream() -> None:
    journal = Journal()
    streamed, stream = a_stream(journal, [[CONTENT]])
    await streamed.aclose()
    await streamed.aclose()
    assert journal.events == [("settled", "client_gone")]
    assert stream.closed
