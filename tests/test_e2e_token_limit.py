"""A key's tokens-per-minute limit on one gateway (SQLite, the local limiter): what
a request's hold reserves counts at admission, all or nothing, so 10 x K concurrent
requests on a limit for K admit exactly K; the settlement gives back what was not
used; every answer carries OpenAI's `x-ratelimit-*-tokens`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.apikeys import KeyPolicy
from teegate.app import create_app
from teegate.billing import prompt_upper_bound
from teegate.devstack import DevstackConfig, build_app
from teegate.ratelimit import LocalRateLimiter
from teegate.store import AccountStore
from tests.support.gateway import (
    Devstack,
    Gateway,
    gateway_settings,
    prepare_database,
    with_store,
)
from tests.support.race import until_decided
from tests.support.servers import ServerThread, serving

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MAX_TOKENS = 10
PER_REQUEST = prompt_upper_bound({"messages": HELLO}) + MAX_TOKENS
"""The tokens each request reserves: its prompt bound and its max_tokens."""
K = 5
STILL = 1_700_000_010.0


def body(stream: bool = False) -> dict[str, Any]:
    return {"model": R1, "messages": HELLO, "max_tokens": MAX_TOKENS, "stream": stream}


@pytest.fixture
def upstream() -> Iterator[Devstack]:
    with serving(build_app(DevstackConfig(first_token_delay_s=0))) as server:
        yield Devstack(server.url)


@pytest.fixture
def gateway(upstream: Devstack, tmp_path: Path) -> Iterator[Gateway]:
    """Provider-asserted over http, a read timeout longer than any test, and a token
    limiter whose clock stands still: no minute ends while a test counts."""
    settings = gateway_settings(
        tmp_path, upstream.url, timeouts={"connect_s": 2, "read_s": 120, "catalog_s": 2}
    )
    key = prepare_database(settings, "tokens")
    app = create_app(settings)
    server = ServerThread(app).start()
    app.state.gateway.chat.limiter = LocalRateLimiter(clock=lambda: STILL)
    try:
        yield Gateway(server.url, settings, key, "tokens")
    finally:
        server.stop()


def shift_to_the_end_of_a_minute(app_state: Any) -> None:
    """The chat service's limiter (tokens) is the one to shift: the request limit is not hit."""
    shift = 59.0 - time.time() % 60
    app_state.gateway.chat.limiter = LocalRateLimiter(clock=lambda: time.time() + shift)


def post(gateway: Gateway, key: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=payload,
        timeout=60,
    )


def test_headers_on_200_streams_and_429(gateway: Gateway, upstream: Devstack) -> None:
    key = gateway.issue_key(policy=KeyPolicy(tpm=2 * PER_REQUEST + 1))
    first = post(gateway, key, body())
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == str(2 * PER_REQUEST + 1)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(PER_REQUEST + 1)
    assert first.headers["x-ratelimit-reset-tokens"].endswith("s")
    assert first.headers["x-ratelimit-limit-requests"]  # the request limit, beside it
    used = first.json()["usage"]["total_tokens"]
    assert used < PER_REQUEST

    # The settlement gave back what the first did not use: a second and a third fit.
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=body(stream=True),
    ) as streamed:
        assert streamed.status_code == 200
        remaining = int(streamed.headers["x-ratelimit-remaining-tokens"])
        assert remaining == 2 * PER_REQUEST + 1 - used - PER_REQUEST
        assert "[DONE]" in "".join(streamed.iter_lines())
    before = upstream.chat_requests()
    refused = post(gateway, key, body() | {"max_tokens": 2 * PER_REQUEST})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "tokens per minute" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-tokens"] == str(2 * PER_REQUEST + 1)
    assert int(refused.headers["x-ratelimit-remaining-tokens"]) < 2 * PER_REQUEST + 1
    assert upstream.chat_requests() == before


def test_a_402_releases_the_reservation_and_carries_the_headers(gateway: Gateway) -> None:
    async def empty_account(store: AccountStore) -> None:
        await store.create_account("broke")

    with_store(gateway.settings, empty_account)
    key = gateway.issue_key("broke", policy=KeyPolicy(tpm=PER_REQUEST))
    for _ in range(3):  # each releases its reservation: the next one fits again
        poor = post(gateway, key, body())
        assert poor.status_code == 402
        assert poor.json()["error"]["code"] == "insufficient_balance"
        assert poor.headers["x-ratelimit-limit-tokens"] == str(PER_REQUEST)
        assert poor.headers["x-ratelimit-remaining-tokens"] == "0"


def test_exactly_k_of_10k_concurrent_requests_are_admitted(
    gateway: Gateway, upstream: Devstack
) -> None:
    key = gateway.issue_key(policy=KeyPolicy(tpm=K * PER_REQUEST), rpm=1000)
    upstream.set_faults("hang")  # admitted requests stay in flight, holding their tokens
    before = upstream.chat_requests()
    outcome = asyncio.run(
        until_decided(
            [gateway.url],
            key,
            [body(i % 2 == 0) for i in range(10 * K)],
            lambda: upstream.chat_requests() - before,
        )
    )
    refused, admitted = outcome
    assert admitted == K
    assert len(refused) == 9 * K
    for response in refused:
        assert response.status_code == 429
        assert response.headers["x-ratelimit-remaining-tokens"] == "0"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    upstream.set_faults()
    # The admitted requests' clients left: their holds were voided and the tokens
    # given back, so the key is served again within the same minute.
    assert post_until_served(gateway, key).status_code == 200


def post_until_served(gateway: Gateway, key: str) -> httpx.Response:
    """The voids land just after the disconnects: ask until one is served (a refused
    ask reserves nothing)."""
    for _ in range(200):
        response = post(gateway, key, body())
        if response.status_code != 429:
            return response
        time.sleep(0.05)
    return response


def test_the_sdk_retries_a_token_429_after_retry_after(tmp_path: Path, upstream: Devstack) -> None:
    settings = gateway_settings(tmp_path, upstream.url)
    prepare_database(settings, "retry")
    app = create_app(settings)
    server = ServerThread(app).start()
    try:
        gateway = Gateway(server.url, settings, "", "retry")
        shift_to_the_end_of_a_minute(app.state)
        key = gateway.issue_key(policy=KeyPolicy(tpm=PER_REQUEST))
        no_retry = gateway.client(api_key=key)
        kwargs: dict[str, Any] = {"model": R1, "messages": HELLO, "max_tokens": MAX_TOKENS}
        # A hold on the whole limit: its settlement gives back only what it did not use.
        assert no_retry.chat.completions.create(**kwargs).choices
        with pytest.raises(openai.RateLimitError) as info:
            no_retry.chat.completions.create(**kwargs)
        assert info.value.code == "rate_limit_exceeded"
        assert info.value.response.headers["retry-after"] == "1"
        retrying = gateway.client(api_key=key, max_retries=2)
        raw = retrying.chat.completions.with_raw_response.create(**kwargs)
        assert raw.headers["x-ratelimit-remaining-tokens"] == "0"  # the next minute's first
        assert raw.parse().choices
    finally:
        server.stop()
