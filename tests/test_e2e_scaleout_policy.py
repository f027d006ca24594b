"""Key policy on two `teegate serve` replicas sharing PostgreSQL and Redis: a token
limit or a spend budget for exactly K requests admits exactly K of 10 x K sent at
once to both, and what the admitted did not use comes back to the key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from teegate.billing import nano_to_usd, prompt_upper_bound, usd_to_nano
from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import database_url, postgres_url, settled_books
from tests.support.gateway import KEY_SECRET, Devstack
from tests.support.race import until_decided
from tests.support.servers import free_port, serving

REDIS_URL = os.environ.get("TEEGATE_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(
    postgres_url() is None or REDIS_URL is None,
    reason="needs TEEGATE_TEST_POSTGRES_URL and TEEGATE_TEST_REDIS_URL",
)
TEEGATE = str(Path(sys.executable).with_name("teegate"))  # the installed console script
R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
ACCOUNT = "policy"
HELLO = [{"role": "user", "content": "hi"}]
MAX_TOKENS = 10
PER_REQUEST = prompt_upper_bound({"messages": HELLO}) + MAX_TOKENS
K = 6


@dataclass
class Cluster:
    urls: list[str]
    database_url: str
    config: Path
    devstack: Devstack

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [TEEGATE, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout


def start_replica(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEEGATE_PORT": str(port)}
    process = subprocess.Popen([TEEGATE, "serve", "--config", str(config)], env=env)
    for _ in range(300):  # bounds a replica that never starts; asserts no duration
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert process.poll() is None, "the replica exited during start-up"
        time.sleep(0.1)
    raise AssertionError("the replica never became ready")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    assert REDIS_URL is not None
    directory = tmp_path_factory.mktemp("policy-cluster")
    upstream_app = build_app(DevstackConfig(first_token_delay_s=0))
    with serving(upstream_app) as upstream, database_url("postgresql", directory) as db:
        config = directory / "teegate.toml"
        config.write_text(
            f'environment = "production"\n'
            f'key_hash_secret = "{KEY_SECRET}"\n'
            f'database_url = "{db}"\n'
            f'redis_url = "{REDIS_URL}"\n'
            f"replicas = 2\n"
            f"redis_timeout_s = 5\n"  # exactness is under test, not a loaded machine's degradation
            f"catalog_refresh_s = 30\n"
            f"[[upstreams]]\n"
            f'name = "devstack"\nbase_url = "{upstream.url}"\nattestation = "provider-asserted"\n'
        )
        cluster = Cluster([], db, config, Devstack(upstream.url))
        cluster.cli("db", "upgrade")
        cluster.cli("accounts", "create", ACCOUNT, "--credit-usd", "100")
        ports = [free_port(), free_port()]
        processes = [start_replica(config, port) for port in ports]
        cluster.urls = [f"http://127.0.0.1:{p}" for p in ports]
        try:
            yield cluster
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)


def body(stream: bool) -> dict[str, Any]:
    return {"model": R1, "messages": HELLO, "max_tokens": MAX_TOKENS, "stream": stream}


def race_while_upstream_hangs(cluster: Cluster, key: str) -> tuple[list[httpx.Response], int]:
    """10 x K at once across both replicas, streams and not; the admitted hang upstream,
    holding what they reserved, until every request is decided."""
    cluster.devstack.set_faults("hang")
    try:
        before = cluster.devstack.chat_requests()
        return asyncio.run(
            until_decided(
                cluster.urls,
                key,
                [body(i % 3 == 0) for i in range(10 * K)],
                lambda: cluster.devstack.chat_requests() - before,
            )
        )
    finally:
        cluster.devstack.set_faults()


def test_a_token_limit_for_k_admits_exactly_k_across_two_replicas(cluster: Cluster) -> None:
    output = cluster.cli("keys", "create", "--account", ACCOUNT, "--tpm", str(K * PER_REQUEST))
    key = output.strip().splitlines()[-1]
    refused, admitted = race_while_upstream_hangs(cluster, key)
    assert admitted == K
    assert len(refused) == 9 * K
    for response in refused:
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert "tokens per minute" in response.json()["error"]["message"]
        assert response.headers["x-ratelimit-limit-tokens"] == str(K * PER_REQUEST)
        assert response.headers["x-ratelimit-remaining-tokens"] == "0"
        assert int(response.headers["retry-after"]) >= 1

    # The admitted requests' clients left: voided, their tokens given back in Redis,
    # so either replica serves the key again (unless the minute has just turned).
    state = settled_books(cluster.database_url, ACCOUNT)
    state.check()
    for url in cluster.urls:
        served = post_until_served(url, key)
        assert served.status_code == 200, served.text
        assert int(served.headers["x-ratelimit-remaining-tokens"]) < K * PER_REQUEST


def post_until_served(url: str, key: str) -> httpx.Response:
    """Each void's tokens go back just after its settlement commits: ask until one is
    served (a refused ask reserves nothing)."""
    for _ in range(200):
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json=body(False),
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        if response.status_code != 429:
            return response
        time.sleep(0.05)
    return response


def test_a_budget_for_k_admits_exactly_k_across_two_replicas(cluster: Cluster) -> None:
    """The budget is decided in PostgreSQL on the account's locked row, whichever
    replica (and batch) a hold arrives in."""
    probe = cluster.cli("keys", "create", "--account", ACCOUNT).strip().splitlines()[-1]
    answer = httpx.post(
        f"{cluster.urls[0]}/v1/chat/completions",
        json=body(False),
        headers={"Authorization": f"Bearer {probe}"},
        timeout=60,
    )
    generation = httpx.get(
        f"{cluster.urls[1]}/v1/generation",
        params={"id": answer.headers["x-request-id"]},
        headers={"Authorization": f"Bearer {probe}"},
    )
    amount = usd_to_nano(generation.json()["data"]["held"])
    limit = nano_to_usd(K * amount + amount // 2)
    output = cluster.cli("keys", "create", "--account", ACCOUNT, "--budget-usd", f"day={limit}")
    key = output.strip().splitlines()[-1]
    refused, admitted = race_while_upstream_hangs(cluster, key)
    assert admitted == K
    assert len(refused) == 9 * K
    for response in refused:
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "budget_exceeded"
        assert response.headers["x-ratelimit-limit"]
    state = settled_books(cluster.database_url, ACCOUNT)
    state.check()
    [budget] = httpx.get(
        f"{cluster.urls[1]}/v1/key", headers={"Authorization": f"Bearer {key}"}
    ).json()["data"]["budgets"]
    assert (budget["limit"], budget["spent"], budget["held"]) == (limit, "0", "0")
