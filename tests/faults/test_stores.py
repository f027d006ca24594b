"""The gateway's stores fail under load: PostgreSQL restarted, Redis restarted, and a
network partition to PostgreSQL (connections accepted, nothing forwarded).

Each runs on servers of its own (tests/support/processes.py: a private PostgreSQL
cluster and `redis-server` on free ports), never the machine's shared ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import TcpProxy
from tests.support.processes import PrivatePostgres, private_redis
from tests.support.reliability import (
    LOAD,
    Outcome,
    Rig,
    Trial,
    fresh_database,
    in_flight,
    lost_in_books,
    mixed_load,
    settle_resources,
    start_rig,
    tries,
)
from tests.support.servers import serving


def finish(rig: Rig, trial: Trial) -> None:
    trial.outcomes += recovered(rig)
    trial.lost += asyncio.run(lost_in_books(rig.database_url, rig.account, trial.outcomes))
    trial.leaks = settle_resources(rig.gateway.resources, rig.baseline)
    trial.assert_nothing_lost()


def recovered(rig: Rig) -> list[Outcome]:
    """Load until every request of a round is answered again (the store is back)."""
    deadline = time.monotonic() + 30
    while True:
        outcomes = asyncio.run(mixed_load(rig.gateway.url, rig.key, LOAD))
        if all(o.status == 200 and o.complete for o in outcomes):
            return outcomes
        assert time.monotonic() < deadline, f"never recovered: {outcomes}"
        time.sleep(0.2)


async def outage(rig: Rig, stop: Callable[[], None], start: Callable[[], None]) -> list[Outcome]:
    """One round of load in flight when the store goes down, one sent while it is
    down; the store is started again once the first round's answers are all sent
    (their settlements meet the outage)."""
    running = asyncio.ensure_future(mixed_load(rig.gateway.url, rig.key, LOAD))
    await in_flight(rig.devstack, LOAD // 4)
    await asyncio.to_thread(stop)
    while_down = await mixed_load(rig.gateway.url, rig.key, LOAD)
    answered = await running
    await asyncio.sleep(1)  # the settlements of the last answers, just after them
    await asyncio.to_thread(start)
    return answered + while_down


def test_postgres_restarted_mid_load_loses_nothing(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    with serving(build_app(SLOW)) as upstream:
        postgres_restarted(postgres, upstream.url, tmp_path)


SLOW = DevstackConfig(chunk_delay_s=0.05, completion_tokens=40)
"""Streams of 2 s: PostgreSQL is down before they end."""


def postgres_restarted(postgres: PrivatePostgres, upstream: str, tmp_path: Path) -> None:
    rig = start_rig(tmp_path, upstream, fresh_database(postgres, "restart"))
    trial = Trial("stores", "PostgreSQL restarted mid-run", engine="postgresql")
    try:
        for _ in range(tries()):
            trial.outcomes += asyncio.run(outage(rig, postgres.stop, postgres.start))
            trial.tries += 1
        # while it is down, billing is unavailable: refused, never served unbilled
        trial.expect(lambda o: o.status in (200, 503), "200, or 503 while it is down")
        assert any(o.status == 503 for o in trial.outcomes)
        finish(rig, trial)
    finally:
        rig.gateway.stop()


def test_redis_restarted_mid_load_loses_nothing(upstream: str, tmp_path: Path) -> None:
    with private_redis(tmp_path) as redis:
        url = f"sqlite+aiosqlite:///{tmp_path / 'teegate.db'}"
        rig = start_rig(tmp_path, upstream, url, redis_url=redis.url)
        trial = Trial("stores", "Redis restarted mid-run")
        try:
            for _ in range(tries()):
                trial.outcomes += asyncio.run(outage(rig, redis.stop, redis.start))
                trial.tries += 1
            # the limiter degrades to its local limit while Redis is away: nobody is refused
            trial.expect(lambda o: o.status == 200, "200")
            finish(rig, trial)
        finally:
            rig.gateway.stop()


STORE_TIMEOUTS = {
    "TEEGATE_DATABASE_STATEMENT_TIMEOUT_S": "2",
    "TEEGATE_DATABASE_POOL_TIMEOUT_S": "2",
    "TEEGATE_DATABASE_CONNECT_TIMEOUT_S": "2",
}
"""The store's timeouts (lane edge's settings), short so the partition is found fast."""

PATIENCE_S = 8
"""How long a client waits for its answer during the partition."""


def test_a_partition_to_postgres_is_503_not_a_stall(
    postgres: PrivatePostgres, upstream: str, tmp_path: Path
) -> None:
    """The relay accepts and keeps every connection but forwards nothing: requests
    must be refused (503) within the client's patience, never left hanging."""
    proxy = TcpProxy("127.0.0.1", postgres.port)
    try:
        url = fresh_database(postgres, "partition", port=proxy.port)
        rig = start_rig(tmp_path, upstream, url, env=STORE_TIMEOUTS)
        trial = Trial("stores", "network partition to PostgreSQL (stall)", engine="postgresql")
        try:
            for _ in range(tries()):
                proxy.stall()
                time.sleep(1.2)  # past the key cache: authentication needs the store too
                trial.outcomes += asyncio.run(
                    mixed_load(rig.gateway.url, rig.key, LOAD, timeout_s=PATIENCE_S)
                )
                proxy.resume()
                trial.tries += 1
            if hung := sum(o.status is None for o in trial.outcomes):
                trial.lost.append(f"{hung} requests hung on the partition (no answer)")
            trial.expect(lambda o: o.status in (None, 200, 503), "200 or 503")
            finish(rig, trial)
        finally:
            proxy.resume()
            rig.gateway.stop()
    finally:
        proxy.close()
