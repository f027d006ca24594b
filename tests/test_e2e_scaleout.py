"""Two `teegate serve` processes sharing PostgreSQL and Redis behave as one gateway:
exact per-key limits, exact billing, revocation everywhere within a second, and a
graceful SIGTERM that finishes and settles in-flight streams."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import database_url, postgres_url, settled_books
from tests.support.gateway import KEY_SECRET, Devstack
from tests.support.servers import free_port, serving

REDIS_URL = os.environ.get("TEEGATE_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(
    postgres_url() is None or REDIS_URL is None,
    reason="needs TEEGATE_TEST_POSTGRES_URL and TEEGATE_TEST_REDIS_URL",
)
TEEGATE = [str(Path(sys.executable).with_name("teegate"))]  # the installed console script
R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
ACCOUNT = "scale"


@dataclass
class Cluster:
    urls: list[str]
    processes: list[subprocess.Popen[bytes]]
    database_url: str
    config: Path
    devstack: Devstack

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*TEEGATE, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout


def write_config(path: Path, db: str, upstream: str, redis_db: int) -> None:
    assert REDIS_URL is not None
    path.write_text(
        f'environment = "production"\n'
        f'key_hash_secret = "{KEY_SECRET}"\n'
        f'database_url = "{db}"\n'
        f'redis_url = "{REDIS_URL.rsplit("/", 1)[0]}/{redis_db}"\n'
        f"replicas = 2\n"
        f"redis_timeout_s = 5\n"  # exactness is under test, not a loaded machine's degradation
        f"catalog_refresh_s = 30\n"
        f"[[upstreams]]\n"
        f'name = "devstack"\nbase_url = "{upstream}"\nattestation = "provider-asserted"\n'
    )


def start_replica(config: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEEGATE_PORT": str(port)}
    process = subprocess.Popen([*TEEGATE, "serve", "--config", str(config)], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert process.poll() is None, "the replica exited during start-up"
        assert time.monotonic() < deadline, "the replica never became ready"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster")
    paced = DevstackConfig(chunk_delay_s=0.02, completion_tokens=60)
    with serving(build_app(paced)) as upstream, database_url("postgresql", directory) as db:
        config = directory / "teegate.toml"
        write_config(config, db, upstream.url, redis_db=14)
        subprocess.run([*TEEGATE, "db", "upgrade", "--config", str(config)], check=True)
        subprocess.run(
            [
                *TEEGATE,
                "accounts",
                "create",
                ACCOUNT,
                "--credit-usd",
                "100",
                "--config",
                str(config),
            ],
            check=True,
        )
        ports = [free_port(), free_port()]
        processes = [start_replica(config, port) for port in ports]
        try:
            yield Cluster(
                [f"http://127.0.0.1:{p}" for p in ports],
                processes,
                db,
                config,
                Devstack(upstream.url),
            )
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
                    process.wait(30)


def new_key(cluster: Cluster, rpm: int) -> str:
    output = cluster.cli("keys", "create", "--account", ACCOUNT, "--rpm", str(rpm))
    return output.strip().splitlines()[-1]


async def hammer(urls: list[str], key: str, total: int) -> list[httpx.Response]:
    body = {"model": R1, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(f"{urls[i % 2]}/v1/chat/completions", json=body, headers=headers)
                for i in range(total)
            )
        )


def test_two_replicas_admit_exactly_the_limit_and_bill_exactly(cluster: Cluster) -> None:
    limit = 30
    key = new_key(cluster, limit)
    before = cluster.devstack.chat_requests()
    responses = asyncio.run(hammer(cluster.urls, key, 3 * limit))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == limit
    assert statuses.count(429) == 2 * limit
    assert cluster.devstack.chat_requests() - before == limit
    for response in responses:
        assert response.headers["x-ratelimit-limit"] == str(limit)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["x-ratelimit-remaining"] == "0"
    state = settled_books(cluster.database_url, ACCOUNT)
    state.check()
    assert state.open_holds == 0
    assert state.usage_records >= limit


def test_revocation_reaches_every_replica_within_a_second(cluster: Cluster) -> None:
    key = new_key(cluster, 1000)
    headers = {"Authorization": f"Bearer {key}"}
    for url in cluster.urls:
        assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 200
    cluster.cli("keys", "revoke", _key_id(cluster, key))
    time.sleep(1.1)
    for url in cluster.urls:
        assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 401


def _key_id(cluster: Cluster, key: str) -> str:
    import json

    keys = json.loads(cluster.cli("keys", "list", "--json"))
    (match,) = [k for k in keys if k["hint"].endswith(key[-4:]) and k["active"]]
    return str(match["id"])


def test_sigterm_finishes_in_flight_streams_and_settles_them(cluster: Cluster) -> None:
    key = new_key(cluster, 1000)
    target = cluster.urls[1]
    body = {"model": R1, "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def stream_all() -> list[str]:
        async with httpx.AsyncClient(timeout=60) as client:

            async def one() -> str:
                async with client.stream(
                    "POST",
                    f"{target}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                ) as response:
                    assert response.status_code == 200
                    last = ""
                    async for line in response.aiter_lines():
                        if line:
                            last = line
                    return last

            tasks = [asyncio.ensure_future(one()) for _ in range(20)]
            await asyncio.sleep(0.4)  # all 20 are streaming (60 chunks x 20 ms)
            cluster.processes[1].send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    endings = asyncio.run(stream_all())
    assert endings == ["data: [DONE]"] * 20
    # uvicorn re-raises the signal once it has shut down cleanly
    assert cluster.processes[1].wait(30) in (0, -signal.SIGTERM)
    state = settled_books(cluster.database_url, ACCOUNT)
    state.check()
    assert state.open_holds == 0
