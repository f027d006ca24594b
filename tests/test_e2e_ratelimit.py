"""Rate-limit headers on every answer once the key is known, and 429 as the SDK expects."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.app import create_app
from teegate.ratelimit import LocalRateLimiter
from tests.support.gateway import (
    Devstack,
    Gateway,
    SettingsFor,
    prepare_database,
)
from tests.support.metrics import metric
from tests.support.servers import ServerThread

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def limited(attested: SettingsFor) -> Iterator[Gateway]:
    """A gateway whose limiter clock sits one second before the end of a window."""
    settings = attested("limited")
    prepare_database(settings, "limited")
    app = create_app(settings)
    server = ServerThread(app).start()
    shift = 59.0 - time.time() % 60
    app.state.gateway.limiter = LocalRateLimiter(clock=lambda: time.time() + shift)
    gateway = Gateway(server.url, settings, "", "limited")
    gateway.key = gateway.issue_key(rpm=2)
    try:
        yield gateway
    finally:
        server.stop()


def test_429_with_retry_after_and_headers(limited: Gateway, devstack: Devstack) -> None:
    client = limited.client()
    for remaining in ("1", "0"):
        raw = client.chat.completions.with_raw_response.create(model=R1, messages=HELLO)
        assert raw.headers["x-ratelimit-remaining"] == remaining
        assert raw.headers["x-ratelimit-limit"] == "2"
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
    before = devstack.chat_requests()
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=R1, messages=HELLO)
    headers = info.value.response.headers
    assert info.value.code == "rate_limit_exceeded"
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["x-ratelimit-reset"]) > time.time()
    assert devstack.chat_requests() == before


def test_sdk_retries_429_after_retry_after(limited: Gateway) -> None:
    client = limited.client()
    for _ in range(2):
        client.models.list()
    throttled = 'teegate_requests_total{route="/v1/models",status="429"}'
    assert metric(limited.url, throttled) == 0
    raw = limited.client(max_retries=2).models.with_raw_response.list()
    assert raw.headers["x-ratelimit-remaining"] == "1"  # first hit of the next window
    assert metric(limited.url, throttled) == 1


def test_headers_on_4xx_5xx_and_streams(gateway: Gateway, devstack: Devstack) -> None:
    auth = {"Authorization": f"Bearer {gateway.key}"}
    url = f"{gateway.url}/v1/chat/completions"
    bad = httpx.post(url, headers=auth, json={"model": "nope", "messages": HELLO})
    assert bad.status_code == 404 and "x-ratelimit-limit" in bad.headers
    devstack.set_faults("http-500")
    failed = httpx.post(url, headers=auth, json={"model": R1, "messages": HELLO})
    assert failed.status_code == 502 and "x-ratelimit-remaining" in failed.headers
    devstack.set_faults()
    with httpx.stream(
        "POST", url, headers=auth, json={"model": R1, "messages": HELLO, "stream": True}
    ) as stream:
        assert stream.status_code == 200
        assert "x-ratelimit-reset" in stream.headers
        assert stream.headers["content-type"].startswith("text/event-stream")
    unauthenticated = httpx.post(url, json={"model": R1, "messages": HELLO})
    assert unauthenticated.status_code == 401
    assert "x-ratelimit-limit" not in unauthenticated.headers
    assert "x-request-id" in unauthenticated.headers


def test_metrics_expose_limiter_and_catalog_state(gateway: Gateway) -> None:
    assert metric(gateway.url, "teegate_ratelimit_degraded") == 0.0
    assert metric(gateway.url, "teegate_catalog_servable_models") == 16.0
