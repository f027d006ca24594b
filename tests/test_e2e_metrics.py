"""/metrics after real traffic, read with prometheus_client's own parser: each series
the Grafana board charts moves by what the traffic did, and no prompt reaches it."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from teegate.apikeys import KeyPolicy
from teegate.billing import usd_to_nano
from tests.support.gateway import Devstack, Gateway
from tests.support.metrics import OPERATOR, metrics_text

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
CANARY = "canary-7f3e9b1c metrics must never see this"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": CANARY}]
CHAT = "/v1/chat/completions"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(gateway: Gateway) -> tuple[Samples, dict[str, str]]:
    """Every sample by name and labels, and each family's type, as Prometheus reads them."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(metrics_text(gateway.url)):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "the metric never got there"
        time.sleep(0.05)


def ask_and_leave(client: openai.OpenAI) -> None:
    """Ask, and leave when the client's timeout comes (the upstream never answers; the
    gateway's own read timeout, 2 s in tests, comes later)."""
    with contextlib.suppress(openai.APITimeoutError):
        client.chat.completions.create(model=R1, messages=ASK)


def test_metrics_move_with_traffic(gateway: Gateway, devstack: Devstack) -> None:
    before, _ = scrape(gateway)
    client = gateway.client()

    raw = client.chat.completions.with_raw_response.create(model=R1, messages=ASK, max_tokens=16)
    completion = raw.parse()
    assert completion.usage is not None
    stream = client.chat.completions.create(model=R1, messages=ASK, stream=True, max_tokens=16)
    assert sum(1 for _ in stream) > 1

    limited = gateway.client(api_key=gateway.issue_key(rpm=1))
    limited.models.list()
    with pytest.raises(openai.RateLimitError):
        limited.models.list()
    few_tokens = gateway.client(api_key=gateway.issue_key(policy=KeyPolicy(tpm=10)))
    with pytest.raises(openai.RateLimitError):
        few_tokens.chat.completions.create(model=R1, messages=ASK)
    devstack.set_faults("hang")  # the upstream says nothing: the hold stays open meanwhile
    waiting = threading.Thread(target=ask_and_leave, args=(gateway.client(timeout=1),))
    waiting.start()
    base = value(before, "teegate_open_holds")
    eventually(lambda: value(scrape(gateway)[0], "teegate_open_holds") == base + 1)
    waiting.join()
    devstack.set_faults("http-500")
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=R1, messages=ASK)
    assert failed.value.status_code == 502

    eventually(lambda: value(scrape(gateway)[0], "teegate_open_holds") == 0)
    after, types = scrape(gateway)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("teegate_requests_total", route=CHAT, status="200") == 2
    assert moved("teegate_requests_total", route=CHAT, status="502") == 1
    assert moved("teegate_request_duration_seconds_count", route=CHAT, status="200") == 2
    assert moved("teegate_time_to_first_token_seconds_count", model=R1) == 2
    assert moved("teegate_completions_total", model=R1, status="ok") == 2
    assert moved("teegate_requests_total", route=CHAT, status="499") == 1  # left while held
    assert moved("teegate_completions_total", model=R1, status="upstream_error") >= 1
    settled = sum(
        value(after, name, **dict(labels)) - value(before, name, **dict(labels))
        for name, labels in after
        if name == "teegate_completions_total" and dict(labels)["model"] == R1
    )
    assert settled == 4  # each held request settled once: two answered, two failed
    assert moved("teegate_ratelimit_refusals_total", limit="requests") == 1
    assert moved("teegate_ratelimit_refusals_total", limit="tokens") == 1
    prompt = moved("teegate_tokens_total", model=R1, kind="prompt")
    assert prompt >= 2 * completion.usage.prompt_tokens

    charged = httpx.get(
        f"{gateway.url}/admin/v1/usage", headers=OPERATOR, params={"account": gateway.account}
    ).json()["data"]
    newest = {r["id"]: r for r in charged}
    cost = usd_to_nano(newest[raw.headers["x-request-id"]]["total_cost"])
    assert cost > 0 and moved("teegate_revenue_nano_usd_total", model=R1) >= cost

    age = value(after, "teegate_attestation_verdict_age_seconds", upstream="devstack")
    assert math.isfinite(age) and age >= 0
    assert value(after, "teegate_attestation_passing", upstream="devstack") == 1
    assert value(after, "teegate_catalog_servable_models") > 0
    assert types["teegate_request_duration_seconds"] == "histogram"
    assert types["teegate_time_to_first_token_seconds"] == "histogram"
    assert types["teegate_revenue_nano_usd"] == "counter"
    assert types["teegate_open_holds"] == "gauge"
    assert "canary-7f3e9b1c" not in metrics_text(gateway.url)
