"""The Redis limiter on a real Redis: exact across processes, bounded when Redis is gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import pytest

from teegate.errors import ServiceUnavailable
from teegate.ratelimit.redis import OUTAGE_AFTER_S, RETRY_AFTER_FAILURE_S, RedisRateLimiter
from tests.support.servers import free_port

REDIS_URL = os.environ.get("TEEGATE_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="TEEGATE_TEST_REDIS_URL is not set")


def key() -> str:
    return "key_test_" + secrets.token_hex(6)


async def test_two_replicas_admit_exactly_the_limit_between_them() -> None:
    assert REDIS_URL
    # exactness, not degradation, is under test: a loaded machine must not time out into it
    replicas = [RedisRateLimiter(REDIS_URL, replicas=2, timeout_s=5.0) for _ in range(2)]
    key_id, limit = key(), 50
    decisions = await asyncio.gather(
        *(replicas[i % 2].hit(key_id, limit) for i in range(3 * limit))
    )
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == limit
    assert sorted(d.remaining for d in allowed) == list(range(limit))
    assert all(d.remaining == 0 for d in decisions if not d.allowed)
    assert len({d.reset_epoch_s for d in decisions}) <= 2  # one window, or its edge
    assert not any(r.degraded for r in replicas)
    for limiter in replicas:
        await limiter.aclose()


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes], int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed to stop and restart a Redis in this test")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    wait_for_port(port)
    try:
        yield f"redis://127.0.0.1:{port}/0", process, port
    finally:
        process.terminate()
        process.wait(5)


def wait_for_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)


async def test_redis_down_degrades_to_a_bounded_local_limit_and_recovers(
    private_redis: tuple[str, subprocess.Popen[bytes], int],
) -> None:
    url, process, port = private_redis
    limiter = RedisRateLimiter(url, replicas=4)
    key_id, limit = key(), 40
    assert (await limiter.hit(key_id, limit)).allowed
    process.kill()
    process.wait(5)

    local = [await limiter.hit(key_id, limit) for _ in range(limit)]
    assert limiter.degraded
    # Its share of what Redis had not granted yet: never on top of Redis's grants.
    share = (limit - 1) // 4
    assert sum(d.allowed for d in local) == share
    assert all(d.limit == share for d in local)

    restarted = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        await asyncio.sleep(RETRY_AFTER_FAILURE_S + 0.1)
        decision = await limiter.hit(key_id, limit)
        assert not limiter.degraded
        assert decision.allowed and decision.limit == limit
        assert decision.remaining == limit - 1  # a fresh Redis: the count restarts
    finally:
        await limiter.aclose()
        restarted.terminate()
        restarted.wait(5)


async def test_two_replicas_reserve_exactly_the_token_limit_between_them() -> None:
    assert REDIS_URL
    replicas = [RedisRateLimiter(REDIS_URL, replicas=2, timeout_s=5.0) for _ in range(2)]
    key_id, per_request, fits = key(), 300, 20
    limit = per_request * fits
    decisions = await asyncio.gather(
        *(replicas[i % 2].reserve_tokens(key_id, per_request, limit) for i in range(10 * fits))
    )
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == fits
    assert sorted(d.remaining for d in allowed) == [per_request * i for i in range(fits)]
    window = allowed[0].window_start
    if all(d.window_start == window for d in decisions):  # not split by a minute's edge
        assert all(d.remaining == 0 for d in decisions if not d.allowed)
        await replicas[0].correct_tokens(key_id, window, -per_request)
        again = await replicas[1].reserve_tokens(key_id, per_request, limit)
        assert (again.allowed, again.remaining) == (True, 0)
        await replicas[1].correct_tokens(key_id, window, -10 * limit)  # floors at zero
        full = await replicas[0].reserve_tokens(key_id, limit, limit)
        assert (full.allowed, full.remaining) == (True, 0)
        await replicas[0].correct_tokens(key_id, window - 60, -limit)  # a gone window stays gone
    assert not any(r.degraded for r in replicas)
    for limiter in replicas:
        await limiter.aclose()


async def test_tokens_degrade_to_a_bounded_local_limit_when_redis_is_down(
    private_redis: tuple[str, subprocess.Popen[bytes], int],
) -> None:
    url, process, _ = private_redis
    limiter = RedisRateLimiter(url, replicas=4)
    key_id, limit = key(), 4000
    assert (await limiter.reserve_tokens(key_id, 100, limit)).allowed
    process.kill()
    process.wait(5)
    local = [await limiter.reserve_tokens(key_id, 100, limit) for _ in range(20)]
    assert limiter.degraded
    share = (limit - 100) // 4  # of what Redis had not granted: never on top of it
    assert sum(d.allowed for d in local) == share // 100
    assert all(d.limit == share for d in local)
    window = local[0].window_start
    await limiter.correct_tokens(key_id, window, -100)  # the local window; Redis is skipped
    assert (await limiter.reserve_tokens(key_id, 100, limit)).allowed
    await limiter.aclose()


@contextlib.asynccontextmanager
async def slow_redis(delay_s: float) -> AsyncIterator[str]:
    """REDIS_URL behind a proxy that holds each answer `delay_s`: a distant or busy Redis,
    so a burst outlasts the wait for a pooled connection."""
    assert REDIS_URL
    target = urllib.parse.urlsplit(REDIS_URL)

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                await asyncio.sleep(delay)
                dst.write(data)
                await dst.drain()
        dst.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(reader, up_writer, 0), pipe(up_reader, writer, delay_s))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}{target.path}"
    finally:
        server.close()


async def test_a_burst_is_exact_and_does_not_degrade_the_limiter() -> None:
    """400 requests at once on two replicas for a limit of 25: once the pool ran dry,
    the limiter called itself degraded and its local counts came on top of Redis's
    (49 admitted). A burst now waits its turn for a connection."""
    async with slow_redis(0.2) as url:  # 200 per replica, 32 connections: ~1.4 s of queue
        replicas = [
            RedisRateLimiter(url, replicas=2, timeout_s=1.0, queue_timeout_s=30) for _ in range(2)
        ]
        key_id, limit = key(), 25
        decisions = await asyncio.gather(
            *(replicas[i % 2].hit(key_id, limit) for i in range(400)), return_exceptions=True
        )
        assert not any(r.degraded for r in replicas)
        assert sum(1 for d in decisions if not isinstance(d, BaseException) and d.allowed) == limit
        assert all(
            isinstance(d, ServiceUnavailable) for d in decisions if isinstance(d, BaseException)
        )
        for limiter in replicas:
            await limiter.aclose()


async def test_a_burst_past_the_queue_wait_is_shed_with_503_not_degraded() -> None:
    async with slow_redis(0.2) as url:
        limiter = RedisRateLimiter(url, replicas=1, timeout_s=5.0, connections=1,
                                   queue_timeout_s=0.05)  # fmt: skip
        decisions = await asyncio.gather(
            *(limiter.hit(key(), 10) for _ in range(5)), return_exceptions=True
        )
        assert sum(isinstance(d, ServiceUnavailable) for d in decisions) == 4
        assert not limiter.degraded
        await limiter.aclose()


async def test_timeouts_alone_degrade_only_once_they_last() -> None:
    async with slow_redis(1.0) as url:  # a stalled Redis: every call times out
        limiter = RedisRateLimiter(url, replicas=2, timeout_s=0.1)
        with pytest.raises(ServiceUnavailable):
            await limiter.hit(key(), 10)
        assert not limiter.degraded
        await asyncio.sleep(OUTAGE_AFTER_S)
        assert (await limiter.hit(key(), 10)).allowed  # now it is an outage: local share
        assert limiter.degraded
        await limiter.aclose()
