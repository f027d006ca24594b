"""Keys under attack, through a real gateway: a flood of random keys does not exhaust
the database pool, refusals do not tell revoked from unknown keys by their timing,
and one account never reads another's usage or generations."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections.abc import Iterator, Mapping

import httpx
import pytest

from teegate import apikeys
from teegate.auth import issue_key
from teegate.devstack import DevstackConfig, build_app
from teegate.store import AccountStore
from tests.support.gateway import (
    KEY_SECRET,
    Gateway,
    gateway_settings,
    running_gateway,
    with_store,
)
from tests.support.servers import serving

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
CHAT = {"model": V3, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose database pool is one connection (and one overflow), refused
    after one second."""
    with serving(build_app(DevstackConfig())) as upstream:
        settings = gateway_settings(
            tmp_path_factory.mktemp("flood"),
            upstream.url,
            database_pool_size=1,
            database_pool_timeout_s=1,
        )
        with running_gateway(settings, "acme") as gateway:
            yield gateway


async def raw_flood(url: str, prefix: str, connections: int, per_connection: int) -> list[int]:
    """Random well-formed keys, each in its own request, on kept-alive connections:
    raw bytes, so the client spends next to nothing per request."""
    host, port = url.removeprefix("http://").split(":")

    async def one_connection() -> list[int]:
        reader, writer = await asyncio.open_connection(host, int(port))
        statuses = []
        for _ in range(per_connection):
            key = apikeys.generate_key(prefix)
            writer.write(
                f"GET /v1/key HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            statuses.append(int(head.split()[1]))
        writer.close()
        return statuses

    answers = await asyncio.gather(*(one_connection() for _ in range(connections)))
    return [status for statuses in answers for status in statuses]


def test_a_flood_of_random_keys_leaves_the_pool_to_real_clients(small_pool: Gateway) -> None:
    """A thousand random well-formed keys, 200 at a time, once took a pooled connection
    each: the pool ran dry, requests answered 500 after the pool timeout, and real
    clients waited. They are looked up together now, one query at a time."""
    fresh = small_pool.issue_key()  # not cached yet: it needs a lookup during the flood

    async def run() -> tuple[list[int], httpx.Response]:
        flood = asyncio.ensure_future(
            raw_flood(small_pool.url, small_pool.settings.key_prefix, 200, 5)
        )
        await asyncio.sleep(0.1)  # the flood is under way
        async with httpx.AsyncClient(timeout=60) as client:
            normal = await client.post(
                f"{small_pool.url}/v1/chat/completions",
                json=CHAT,
                headers={"Authorization": f"Bearer {fresh}"},
            )
        return await flood, normal

    flood, normal = asyncio.run(run())
    assert normal.status_code == 200, normal.text
    assert len(flood) == 1000
    assert set(flood) == {401}


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, ties averaged)."""
    ranked = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    rank_a = sum(r for r, (_, group) in zip(ranks, ranked, strict=True) if group == 0)
    n, m = len(a), len(b)
    u = rank_a - n * (n + 1) / 2
    z = (u - n * m / 2) / ((n * m * (n + m + 1) / 12) ** 0.5)
    return 2 * (1 - statistics.NormalDist().cdf(abs(z)))


def issued_keys(
    gateway: Gateway, count: int, *, secret: str = KEY_SECRET, revoke: bool = False
) -> list[str]:
    async def issue(store: AccountStore) -> list[str]:
        tokens = []
        for _ in range(count):
            token, key = await issue_key(
                store,
                account=gateway.account,
                prefix=gateway.settings.key_prefix,
                secret=secret.encode(),
            )
            if revoke:
                await store.revoke_key(key.id)
            tokens.append(token)
        return tokens

    return with_store(gateway.settings, issue)


def time_refusals(
    gateway: Gateway, kinds: Mapping[str, Iterator[str]], per_kind: int
) -> dict[str, list[float]]:
    """How long each 401 took, for `per_kind` keys of each kind, interleaved at random."""
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    order = [kind for kind in kinds for _ in range(per_kind)]
    random.Random(18).shuffle(order)
    with httpx.Client(base_url=gateway.url) as client:
        client.get("/healthz")  # one kept-alive connection for every timed request
        for kind in order:
            key = next(kinds[kind])
            started = time.perf_counter()
            answer = client.get("/v1/key", headers={"Authorization": f"Bearer {key}"})
            timings[kind].append(time.perf_counter() - started)
            assert answer.status_code == 401
    return timings


def assert_indistinguishable(timings: dict[str, list[float]]) -> None:
    for a, b in itertools.combinations(sorted(timings), 2):
        # Generous: a real oracle (a lookup for one kind only) shows p far below 1e-6.
        assert mann_whitney_p(timings[a], timings[b]) > 1e-4, (a, b)


def test_refusals_take_the_same_time_for_revoked_unknown_and_wrong_keys(
    small_pool: Gateway,
) -> None:
    """Interleaved refusals of revoked keys, unknown keys and keys hashed under another
    secret: no kind is told apart by how long its 401 takes, whether each key is new
    to the gateway or asked about again."""
    prefix = small_pool.settings.key_prefix
    per_kind = 80
    fresh = {
        "revoked": iter(issued_keys(small_pool, per_kind, revoke=True)),
        "unknown": (apikeys.generate_key(prefix) for _ in itertools.count()),
        # Stored, but hashed under another gateway's secret.
        "wrong_secret": iter(issued_keys(small_pool, per_kind, secret="another-secret")),
    }
    assert_indistinguishable(time_refusals(small_pool, fresh, per_kind))
    again = {
        "revoked": itertools.repeat(issued_keys(small_pool, 1, revoke=True)[0]),
        "unknown": itertools.repeat(apikeys.generate_key(prefix)),
        "wrong_secret": itertools.repeat(issued_keys(small_pool, 1, secret="another-secret")[0]),
    }
    assert_indistinguishable(time_refusals(small_pool, again, per_kind))


def test_the_timing_test_tells_apart_what_differs() -> None:
    fast = [0.001 + 0.00001 * i for i in range(150)]
    slow = [v + 0.0005 for v in fast]
    assert mann_whitney_p(fast, slow) < 1e-6
    assert mann_whitney_p(fast, list(reversed(fast))) > 0.9


def test_an_account_never_reads_another_accounts_usage_or_generations(
    small_pool: Gateway,
) -> None:
    with_store(small_pool.settings, lambda store: store.create_account("other"))
    other = small_pool.issue_key(account="other")
    mine = small_pool.issue_key()
    with httpx.Client(base_url=small_pool.url, timeout=30) as client:
        done = client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {mine}"}
        )
        assert done.status_code == 200
        generation_id = done.json()["id"]
        request_id = done.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while True:  # settled just after the answer was sent: then this account reads it
            own = client.get(
                "/v1/generation",
                params={"id": request_id},
                headers={"Authorization": f"Bearer {mine}"},
            )
            if own.status_code == 200:
                break
            assert own.status_code == 404 and time.monotonic() < deadline, own.text
            time.sleep(0.05)
        mine_usage = client.get("/v1/usage", headers={"Authorization": f"Bearer {mine}"})
        assert request_id in mine_usage.text
        others = client.get("/v1/usage", headers={"Authorization": f"Bearer {other}"})
        assert others.status_code == 200
        assert generation_id not in others.text and request_id not in others.text
        assert others.json()["data"] == []
        for ident in {generation_id, request_id}:
            theirs = client.get(
                "/v1/generation", params={"id": ident}, headers={"Authorization": f"Bearer {other}"}
            )
            assert theirs.status_code == 404, theirs.text
            assert theirs.json()["error"]["code"] == "not_found"
