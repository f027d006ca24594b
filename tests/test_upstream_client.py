"""The upstream client's timeouts on streams: the headers are bounded, and a
silence mid-stream ends the stream as upstream_timeout (the stream's own idle
deadline, not aiohttp's per-read timer)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from teegate.config import Timeouts, UpstreamSettings
from teegate.errors import UpstreamTimeout
from teegate.upstream import UpstreamClient
from tests.support.servers import serving

READ_S = 0.3
SILENCE_S = 3.0


class Script:
    """What the upstream does next: send `events` then fall silent (or end, if `ends`),
    or hang before headers. `clients` records each request's client port."""

    events = 0
    hang = False
    ends = False
    clients: list[int] = []
    cookies: list[str | None] = []


def stalling_upstream() -> Starlette:
    async def chat(request: Request) -> Response:
        assert request.client is not None
        Script.clients.append(request.client.port)
        Script.cookies.append(request.headers.get("cookie"))
        if Script.hang:
            await asyncio.sleep(SILENCE_S)

        async def events() -> AsyncIterator[bytes]:
            for i in range(Script.events):
                yield b'data: {"choices":[],"n":%d}\n\n' % i
                await asyncio.sleep(READ_S / 3)  # steady: never a silence of READ_S
            if Script.ends:
                yield b"data: [DONE]\n\n"
                await asyncio.sleep(0.05)  # the transfer's end comes apart, as over TLS
                return
            await asyncio.sleep(SILENCE_S)
            yield b"data: [DONE]\n\n"

        response = StreamingResponse(events(), media_type="text/event-stream")
        response.set_cookie("upstream_session", "abc")  # must not come back on any request
        return response

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serving(stalling_upstream()) as server:
        yield server.url


@pytest.fixture
def script() -> Iterator[type[Script]]:
    yield Script
    Script.events, Script.hang, Script.ends = 0, False, False
    Script.clients, Script.cookies = [], []


def client_for(url: str) -> UpstreamClient:
    settings = UpstreamSettings(name="stall", base_url=url, attestation="provider-asserted")
    return UpstreamClient(settings, Timeouts(connect_s=1, read_s=READ_S, catalog_s=1))


@pytest.mark.parametrize("events_before", [0, 6])
async def test_a_silence_mid_stream_is_an_upstream_timeout(
    upstream_url: str, script: type[Script], events_before: int
) -> None:
    script.events = events_before
    client = client_for(upstream_url)
    received: list[bytes] = []
    try:
        stream = await client.open_stream(b"{}")
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="stopped sending"):
            async for events in stream.events():
                received.extend(events)
        waited = time.monotonic() - started
        stream.close()
    finally:
        await client.aclose()
    assert len(received) == events_before  # every event before the silence came through
    last_event_at = max(0, events_before - 1) * READ_S / 3
    assert waited >= last_event_at + READ_S * 0.9
    assert waited < SILENCE_S  # not the upstream's own end


async def test_headers_that_never_come_are_an_upstream_timeout(
    upstream_url: str, script: type[Script]
) -> None:
    script.hang = True
    client = client_for(upstream_url)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeout, match="did not answer the stream in time"):
            await client.open_stream(b"{}")
    finally:
        await client.aclose()
    assert READ_S <= time.monotonic() - started < SILENCE_S


async def test_a_finished_stream_hands_its_connection_back(
    upstream_url: str, script: type[Script]
) -> None:
    script.events, script.ends = 1, True
    client = client_for(upstream_url.replace("127.0.0.1", "localhost"))  # a jar keeps no IP's
    try:
        for _ in range(3):
            stream = await client.open_stream(b"{}")
            async for events in stream.events():  # as the relay does: stop at [DONE]
                if events[-1] == b"[DONE]":
                    break
            await stream.finish()
    finally:
        await client.aclose()
    assert len(script.clients) == 3
    assert len(set(script.clients)) == 1  # one connection: no new handshake per stream
    assert script.cookies == [None, None, None]  # one user's cookie never reaches another's


def paced_answers(parts: int, part_bytes: int) -> Starlette:
    """Whole answers (embeddings, completions) whose body arrives in `parts` pieces,
    paced apart: a client that kept only the first read would parse a fragment."""

    async def answer(request: Request) -> Response:
        body = b'{"data":"' + b"x" * (parts * part_bytes) + b'"}'

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(body), part_bytes):
                yield body[start : start + part_bytes]
                await asyncio.sleep(0.01)

        return StreamingResponse(pieces(), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/embeddings", answer, methods=["POST"]),
            Route("/v1/chat/completions", answer, methods=["POST"]),
        ]
    )


async def test_embeddings_are_read_whole_however_many_reads_they_take() -> None:
    with serving(paced_answers(parts=8, part_bytes=100_000)) as server:
        client = client_for(server.url)
        try:
            raw, body = await client.embed(b"{}")
        finally:
            await client.aclose()
    assert len(body["data"]) == 800_000
    assert raw.endswith(b'"}')


async def test_a_completion_is_read_whole_however_many_reads_it_takes() -> None:
    with serving(paced_answers(parts=4, part_bytes=50_000)) as server:
        client = client_for(server.url)
        try:
            raw, body = await client.complete(b"{}")
        finally:
            await client.aclose()
    assert len(body["data"]) == 200_000
    assert raw.endswith(b'"}')
