"""Confidentiality canary: a random token sent everywhere content can go (prompts, tool
arguments, completions, inputs that trigger errors, requests under upstream faults)
through a `teegate serve` logging at DEBUG, then searched for everywhere the gateway
writes: its log, every file of its data directory (the SQLite database and its
journal), a `pg_dump` of its PostgreSQL database, `/metrics`, and every error body.

The devstack answers a JSON schema's `const` and a tool's parameter `const` verbatim,
so the canary is also in the completions and tool-call arguments it generates.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.processes import PrivatePostgres
from tests.support.reliability import (
    V3,
    Rig,
    Trial,
    chat_body,
    fresh_database,
    lost_in_books,
    one_request,
    start_rig,
)

CANARY = "cnry" + secrets.token_hex(12)
"""Hex only, so it is the same bytes in UTF-8, JSON, SQL dumps and logs."""

FAULTS = ["drop-mid-stream", "garbage-sse", "no-usage", "http-500", "hang"]


def carrying_canary() -> list[dict[str, Any]]:
    """Valid requests whose prompt, tools, history or expected answer carry it."""
    schema = {"type": "object", "properties": {"secret": {"const": CANARY}}, "required": ["secret"]}
    tool = {"type": "function", "function": {"name": "remember", "parameters": schema}}
    history = [
        {"role": "user", "content": f"my code is {CANARY}"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "remember", "arguments": f'{{"secret": "{CANARY}"}}'},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"stored {CANARY}"},
    ]  # fmt: skip
    return [
        chat_body(f"the password is {CANARY}"),
        {**chat_body(), "tools": [tool], "tool_choice": "required"},
        {**chat_body(), "messages": history, "tools": [tool]},
        {**chat_body(), "response_format": {
            "type": "json_schema", "json_schema": {"name": "secret", "schema": schema},
        }},
        {**chat_body(f"system {CANARY}"), "messages": [
            {"role": "system", "content": CANARY}, {"role": "user", "content": CANARY},
        ]},
    ]  # fmt: skip


def refused_with_canary() -> list[dict[str, Any] | bytes]:
    """Bodies that are refused, each with the canary where the error is found."""
    prompt = [{"role": "user", "content": CANARY}]
    return [
        {"model": V3, "messages": prompt, "temperature": CANARY},
        {"model": V3, "messages": [{"role": CANARY, "content": "hi"}]},
        {"model": V3, "messages": prompt, "max_tokens": 10**9},
        {"model": V3, "messages": prompt, "response_format": {"type": CANARY}},
        {"model": V3, "messages": prompt, "stop": [CANARY] * 9},
        {"model": V3, "messages": CANARY},
        {"model": V3, "messages": prompt, "tools": [{"type": "function", "function": CANARY}]},
        {"model": V3, "messages": prompt, "seed": CANARY},
        {"model": V3, "messages": prompt, "n": CANARY},
        f'{{"model": "{V3}", "messages": [{{"role": "user", "content": "{CANARY}'.encode(),
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def canary_rig(
    request: pytest.FixtureRequest, upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Rig, PrivatePostgres | None]]:
    directory = tmp_path_factory.mktemp(f"canary-{request.param}")
    debug = {"TEEGATE_LOG_LEVEL": "debug"}
    if request.param == "sqlite":
        rig = start_rig(directory, upstream, f"sqlite+aiosqlite:///{directory / 'teegate.db'}",
                        env=debug)  # fmt: skip
        try:
            yield rig, None
        finally:
            rig.gateway.stop()
        return
    postgres: PrivatePostgres = request.getfixturevalue("postgres")
    rig = start_rig(directory, upstream, fresh_database(postgres, "canary"), env=debug)
    try:
        yield rig, postgres
    finally:
        rig.gateway.stop()


def test_the_canary_is_nowhere_the_gateway_writes(
    canary_rig: tuple[Rig, PrivatePostgres | None],
) -> None:
    rig, postgres = canary_rig
    engine = "sqlite" if postgres is None else "postgresql"
    trial = Trial("canary", f"confidentiality canary ({engine}, DEBUG logs)", engine=engine)
    error_bodies: list[bytes] = []

    async def send_everything() -> None:
        async with httpx.AsyncClient(
            base_url=rig.gateway.url, headers={"Authorization": f"Bearer {rig.key}"}, timeout=30
        ) as client:
            accepted = []
            for i, body in enumerate(refused_with_canary()):
                sent = {"content": body} if isinstance(body, bytes) else {"json": body}
                response = await client.post("/v1/chat/completions", **sent)
                if response.status_code < 400:
                    accepted.append(i)
                error_bodies.append(response.content)
            assert not accepted, f"not refused: {accepted}"
            bad_key = {"Authorization": f"Bearer vgpu_sk_{CANARY}"}
            response = await client.post("/v1/chat/completions", json=chat_body(), headers=bad_key)
            assert response.status_code == 401
            error_bodies.append(response.content)

    async def answered(fault: str | None) -> None:
        import openai

        async with openai.AsyncOpenAI(
            base_url=f"{rig.gateway.url}/v1", api_key=rig.key, max_retries=0, timeout=30
        ) as client:
            for body in carrying_canary():
                for stream in (False, True):
                    outcome = await one_request(client, body, stream=stream)
                    trial.outcomes.append(outcome)
                    if fault is None:
                        assert outcome.status == 200 and outcome.complete, (body, outcome)

    asyncio.run(answered(None))
    completions = asyncio.run(completions_with_canary(rig))
    assert completions, "the devstack never answered the canary back"
    for fault in FAULTS:
        rig.devstack.set_faults(fault)
        try:
            asyncio.run(answered(fault))
        finally:
            rig.devstack.set_faults()
    asyncio.run(send_everything())
    trial.tries = len(trial.outcomes) + len(error_bodies)
    trial.lost += asyncio.run(lost_in_books(rig.database_url, rig.account, trial.outcomes))
    metrics = httpx.get(f"{rig.gateway.url}/metrics").content
    rig.gateway.stop()  # flushes the log and the database files
    places = {
        "the gateway's log (DEBUG)": rig.gateway.log.read_bytes(),
        "/metrics": metrics,
        **{f"error body {i}": body for i, body in enumerate(error_bodies)},
        **{
            f"data file {path.name}": path.read_bytes()
            for path in rig.gateway.config.parent.iterdir()
            if path.is_file() and path.name.startswith("teegate.db")
        },
    }
    # the SQL the gateway sent, with its parameters, is in the log too
    assert b"DEBUG:sqlalchemy" in places["the gateway's log (DEBUG)"]
    if postgres is not None:
        places["pg_dump"] = postgres.dump(rig.database_url.rsplit("/", 1)[1])
    assert any(name.startswith("data file") for name in places) or postgres is not None
    trial.lost += [f"canary found in {name}" for name, data in places.items()
                   if CANARY.encode() in data]  # fmt: skip
    rig.gateway.start()  # the fixture stops it again
    trial.assert_nothing_lost()


async def completions_with_canary(rig: Rig) -> list[str]:
    """The canary came back in answers: the test's own check that it went through."""
    import openai

    found = []
    async with openai.AsyncOpenAI(
        base_url=f"{rig.gateway.url}/v1", api_key=rig.key, max_retries=0, timeout=30
    ) as client:
        for body in carrying_canary()[1:4]:
            completion = await client.chat.completions.create(**body)
            message = completion.choices[0].message
            text = (message.content or "") + "".join(
                c.function.arguments for c in message.tool_calls or [] if c.type == "function"
            )
            if CANARY in text:
                found.append(text)
    return found
