"""Spend budgets end to end on one gateway (SQLite): a key whose budget holds exactly
K requests admits exactly K of 10 x K sent at once, the rest refused with 402
budget_exceeded before the upstream; `GET /v1/key` shows what is spent, held and left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from teegate.apikeys import KeyPolicy
from teegate.app import create_app
from teegate.auth import issue_key
from teegate.billing import usd_to_nano
from teegate.devstack import DevstackConfig, build_app
from teegate.store import AccountStore
from tests.support.gateway import (
    KEY_SECRET,
    Devstack,
    Gateway,
    gateway_settings,
    prepare_database,
    with_store,
)
from tests.support.race import until_decided
from tests.support.servers import ServerThread, serving

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
BODY: dict[str, Any] = {
    "model": R1,
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 10,
}
K = 5


@pytest.fixture
def upstream() -> Iterator[Devstack]:
    with serving(build_app(DevstackConfig(first_token_delay_s=0))) as server:
        yield Devstack(server.url)


@pytest.fixture
def gateway(upstream: Devstack, tmp_path: Path) -> Iterator[Gateway]:
    settings = gateway_settings(
        tmp_path, upstream.url, timeouts={"connect_s": 2, "read_s": 120, "catalog_s": 2}
    )
    key = prepare_database(settings, "budgets")
    server = ServerThread(create_app(settings)).start()
    try:
        yield Gateway(server.url, settings, key, "budgets")
    finally:
        server.stop()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def hold_of_one_request(gateway: Gateway) -> int:
    """What BODY holds, read back from an unbudgeted key's generation."""
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, headers=auth(gateway.key))
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    generation = httpx.get(
        f"{gateway.url}/v1/generation", params={"id": request_id}, headers=auth(gateway.key)
    )
    return usd_to_nano(generation.json()["data"]["held"])


def budgeted_key(gateway: Gateway, limit_nano: int, **kwargs: Any) -> str:
    """A new key with a daily budget, set before the key is first used."""

    async def issue(store: AccountStore) -> str:
        token, key = await issue_key(
            store,
            account=gateway.account,
            prefix=gateway.settings.key_prefix,
            secret=KEY_SECRET.encode(),
            **kwargs,
        )
        await store.set_budget(gateway.account, key.id, "day", limit_nano)
        return token

    return with_store(gateway.settings, issue)


def test_a_budget_for_k_admits_exactly_k_of_10k_at_once(
    gateway: Gateway, upstream: Devstack
) -> None:
    amount = hold_of_one_request(gateway)
    limit = K * amount + amount // 2
    key = budgeted_key(gateway, limit, policy=KeyPolicy(tpm=10**9))
    upstream.set_faults("hang")
    try:
        before = upstream.chat_requests()
        refused, admitted = asyncio.run(
            until_decided(
                [gateway.url],
                key,
                [BODY | {"stream": i % 2 == 0} for i in range(10 * K)],
                lambda: upstream.chat_requests() - before,
            )
        )
    finally:
        upstream.set_faults()
    assert admitted == K
    assert len(refused) == 9 * K
    for response in refused:
        assert response.status_code == 402
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
        assert "this key's daily budget" in error["message"]
        assert response.headers["x-ratelimit-limit"]
        assert response.headers["x-ratelimit-limit-tokens"] == str(10**9)

    # The admitted requests' clients left: voided, nothing spent, nothing held.
    data = settled_key(gateway, key)
    [budget] = data["budgets"]
    assert (budget["scope"], budget["period"]) == ("key", "day")
    assert usd_to_nano(budget["limit"]) == limit
    assert (budget["spent"], budget["held"]) == ("0", "0")

    served = httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, headers=auth(key))
    assert served.status_code == 200
    [budget] = settled_key(gateway, key)["budgets"]
    assert 0 < usd_to_nano(budget["spent"]) <= amount
    assert usd_to_nano(budget["remaining"]) == limit - usd_to_nano(budget["spent"])


def settled_key(gateway: Gateway, key: str) -> dict[str, Any]:
    """GET /v1/key once no hold of the key is open (a void lands just after its client
    leaves)."""
    for _ in range(200):
        data: dict[str, Any] = httpx.get(f"{gateway.url}/v1/key", headers=auth(key)).json()["data"]
        if all(b["held"] == "0" for b in data["budgets"]):
            return data
        time.sleep(0.05)
    return data


def test_an_account_budget_refuses_every_key_of_it(gateway: Gateway, upstream: Devstack) -> None:
    amount = hold_of_one_request(gateway)
    with_store(
        gateway.settings, lambda store: store.set_budget(gateway.account, None, "month", amount)
    )
    key = budgeted_key(gateway, 100 * amount)
    before = upstream.chat_requests()
    assert (
        httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, headers=auth(key)).status_code
        == 200
    )
    refused = httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, headers=auth(key))
    assert refused.status_code == 402
    assert "your account's monthly budget" in refused.json()["error"]["message"]
    assert upstream.chat_requests() == before + 1
