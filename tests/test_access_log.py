"""The access log: one line per failed request or per request slow to answer;
none for a quick success, nor for a stream that merely runs long."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.testing import capture_logs

from teegate.api import RequestContextMiddleware
from teegate.metrics import Metrics

SLOW_REQUEST_S = 0.1


class Recorder:
    def __init__(self, logs: list[MutableMapping[str, Any]]) -> None:
        self._logs = logs

    @property
    def lines(self) -> list[MutableMapping[str, Any]]:
        return [line for line in self._logs if line["event"] == "request"]


def app_that(
    status: int, *, delay_start_s: float = 0, body_chunks: int = 1, gap_s: float = 0
) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(delay_start_s)
        await send({"type": "http.response.start", "status": status, "headers": []})
        for _ in range(body_chunks):
            await asyncio.sleep(gap_s)
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def call(app: ASGIApp) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await RequestContextMiddleware(app, Metrics(), SLOW_REQUEST_S)(scope, receive, send)
    return sent


@pytest.fixture
def access_log() -> Iterator[Recorder]:
    with capture_logs() as logs:
        yield Recorder(logs)


async def test_a_quick_success_is_not_logged_but_carries_its_request_id(
    access_log: Recorder,
) -> None:
    sent = await call(app_that(200))
    assert access_log.lines == []
    (name, value) = sent[0]["headers"][-1]
    assert name == b"x-request-id" and value.startswith(b"req_")


async def test_a_failure_is_logged_once(access_log: Recorder) -> None:
    await call(app_that(429))
    (line,) = access_log.lines
    assert (line["event"], line["status"], line["method"]) == ("request", 429, "POST")


async def test_a_long_stream_that_answered_at_once_is_not_logged(access_log: Recorder) -> None:
    await call(app_that(200, body_chunks=4, gap_s=0.05))  # 0.2 s in all, headers at once
    assert access_log.lines == []


async def test_a_request_slow_to_answer_is_logged(access_log: Recorder) -> None:
    await call(app_that(200, delay_start_s=0.15))
    (line,) = access_log.lines
    assert line["answer_ms"] >= 150
    assert line["duration_ms"] >= line["answer_ms"]
