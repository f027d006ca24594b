"""Leases and idempotency end to end, through the official SDK, on SQLite and PostgreSQL:
a stream that runs longer than `hold_ttl_s` is settled from its usage, not reaped; a
retry with the same Idempotency-Key is neither held nor charged again."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.app import create_app
from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import ENGINES, books, database_url, settled_books
from tests.support.gateway import Gateway, gateway_settings, prepare_database
from tests.support.metrics import metrics_text
from tests.support.servers import serving

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
HOLD_TTL_S = 0.6
"""Leases renewed every 0.15 s, reaped 0.6 s after their process stops renewing them."""


@dataclass
class Rig:
    gateway: Gateway
    url: str

    def generation(self, request_id: str) -> dict[str, object]:
        headers = {"Authorization": f"Bearer {self.gateway.key}"}
        response = httpx.get(
            f"{self.gateway.url}/v1/generation", headers=headers, params={"id": request_id}
        )
        assert response.status_code == 200, response.text
        data: dict[str, object] = response.json()["data"]
        return data


@pytest.fixture(scope="module", params=ENGINES)
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    directory = tmp_path_factory.mktemp("lease")
    slow = DevstackConfig(chunk_delay_s=0.05, completion_tokens=40)  # a 2 s stream
    with database_url(request.param, directory) as url, serving(build_app(slow)) as upstream:
        settings = gateway_settings(
            directory, upstream.url, database_url=url, hold_ttl_s=HOLD_TTL_S,
            reaper_interval_s=0.1,
        )  # fmt: skip
        key = prepare_database(settings, "acme", credit_usd="100")
        with serving(create_app(settings)) as server:
            yield Rig(Gateway(server.url, settings, key, "acme"), url)


def messages(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def test_a_stream_longer_than_the_hold_ttl_is_settled_from_its_usage(rig: Rig) -> None:
    """Issue 18, finding 2: the reaper posted a running stream's full hold at hold_ttl_s,
    and the real settlement then found the hold resolved and was lost."""
    client = rig.gateway.client()
    with client.chat.completions.with_streaming_response.create(
        model=V3, messages=messages("a long one"), max_tokens=200, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert chunks
    state = settled_books(rig.url, "acme")
    state.check()
    record = rig.generation(request_id)
    assert (record["settled_by"], record["status"], record["tokens_completion"]) == (
        "usage",
        "ok",
        40,
    )
    assert record["total_cost"] != record["held"]


def test_the_lease_and_cap_metrics_are_published(rig: Rig) -> None:
    metrics = metrics_text(rig.gateway.url)
    for name in (
        "teegate_settlements_capped_total",
        "teegate_holds_live",
        "teegate_settlements_deferred",
    ):
        assert f"# TYPE {name} " in metrics
    assert "teegate_settlements_deferred 0.0" in metrics


def test_a_retry_with_the_same_idempotency_key_is_not_charged_twice(rig: Rig) -> None:
    client = rig.gateway.client()
    before = books(rig.url, "acme")
    headers = {"Idempotency-Key": "order-7f3a"}
    first = client.chat.completions.create(
        model=V3, messages=messages("once"), max_tokens=8, extra_headers=headers
    )
    assert first.choices
    with pytest.raises(openai.APIStatusError) as again:
        client.chat.completions.create(
            model=V3, messages=messages("once"), max_tokens=8, extra_headers=headers
        )
    assert (again.value.status_code, again.value.code) == (409, "idempotency_key_used")
    with pytest.raises(openai.APIStatusError) as changed:
        client.chat.completions.create(
            model=V3, messages=messages("twice"), max_tokens=8, extra_headers=headers
        )
    assert (changed.value.status_code, changed.value.code) == (422, "idempotency_key_reused")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=V3, messages=messages("once"), extra_headers={"Idempotency-Key": "a b"}
        )
    assert bad.value.code == "invalid_idempotency_key"
    after = settled_books(rig.url, "acme")
    after.check()
    assert (after.holds - before.holds, after.usage_records - before.usage_records) == (1, 1)
