"""200 concurrent requests on an account funded for exactly K holds, through the SDK,
on SQLite and PostgreSQL: exactly K reach the upstream, the rest get 402, and the
books balance to the nano-USD."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

from teegate.app import create_app
from teegate.billing import Rates, cost_nano, nano_to_usd, prompt_upper_bound, usd_to_nano
from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import ENGINES, books, database_url
from tests.support.gateway import Devstack, Gateway, gateway_settings, prepare_database
from tests.support.servers import serving

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
REQUESTS = 200
K = 37
MAX_TOKENS = 20
UPSTREAM_DELAY_S = 6.0
"""Every admitted request waits this long upstream (`slow-first-token`), so all 200
holds are decided before the first settlement releases anything."""


def body(i: int) -> CompletionCreateParamsNonStreaming:
    return {"model": V3, "messages": [{"role": "user", "content": f"count me {i:03d}"}],
            "max_tokens": MAX_TOKENS}  # fmt: skip


async def race(gateway: Gateway) -> tuple[list[ChatCompletion | openai.APIStatusError], float]:
    """All requests at once; also returns when the last refusal arrived (seconds)."""
    client = gateway.async_client(timeout=30)
    started = time.monotonic()
    last_refusal = 0.0

    async def one(i: int) -> ChatCompletion | openai.APIStatusError:
        nonlocal last_refusal
        try:
            return await client.chat.completions.create(**body(i))
        except openai.APIStatusError as exc:
            last_refusal = max(last_refusal, time.monotonic() - started)
            return exc

    try:
        return list(await asyncio.gather(*(one(i) for i in range(REQUESTS)))), last_refusal
    finally:
        await client.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_exactly_k_of_200_concurrent_requests_fit(engine: str, tmp_path: Path) -> None:
    config = DevstackConfig(
        first_token_delay_s=UPSTREAM_DELAY_S, faults=frozenset({"slow-first-token"})
    )
    with database_url(engine, tmp_path) as url, serving(build_app(config)) as upstream:
        settings = gateway_settings(
            tmp_path, upstream.url, database_url=url, default_rpm=10_000,
            timeouts={"connect_s": 2, "read_s": 10, "catalog_s": 2},
        )  # fmt: skip
        rates = Rates(usd_to_nano("0.444"), usd_to_nano("1.554"))  # V3's sample prices x 1.85
        hold = cost_nano(prompt_upper_bound(body(0)), MAX_TOKENS, rates)
        initial = K * hold + hold - 1  # room for K holds, one nano-USD short of K + 1
        key = prepare_database(settings, "racer", credit_usd=nano_to_usd(initial))
        devstack = Devstack(upstream.url)
        with serving(create_app(settings)) as server:
            gateway = Gateway(server.url, settings, key, "racer")
            pricing = gateway.client().models.retrieve(V3).model_dump()["pricing"]
            assert (pricing["prompt"], pricing["completion"]) == ("0.444", "1.554")
            results, last_refusal = asyncio.run(race(gateway))

        # the premise: every hold was decided while the admitted ones were still upstream
        assert last_refusal < UPSTREAM_DELAY_S
        served = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, openai.APIStatusError)]
        assert (len(served), len(refused)) == (K, REQUESTS - K), {type(r) for r in results}
        assert {(r.status_code, r.code) for r in refused} == {(402, "insufficient_balance")}
        assert devstack.chat_requests() == K

        usages = [r.usage for r in served if r.usage is not None]
        assert len(usages) == K
        charged = sum(cost_nano(u.prompt_tokens, u.completion_tokens, rates) for u in usages)
        state = books(url, "racer")
        state.check()
        assert state.balance_nano == initial - charged
        assert state.usage_cost_nano == state.debits_nano == charged
        assert (state.usage_records, state.open_holds, state.held_nano) == (K, 0, 0)
