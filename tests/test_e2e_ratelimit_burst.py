"""A burst on two gateway replicas sharing Redis admits exactly a key's limit: the
limiter's connection pool running dry is pressure, not an outage."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from teegate.app import create_app
from teegate.devstack import DevstackConfig, build_app
from tests.support.gateway import Gateway, gateway_settings, prepare_database
from tests.support.servers import ServerThread, serving

REDIS_URL = os.environ.get("TEEGATE_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="TEEGATE_TEST_REDIS_URL is not set")
RPM = 25


async def burst(urls: list[str], key: str, count: int) -> list[int]:
    """`count` requests at once, each on its own connection, spread over `urls`."""

    async def one(url: str) -> int:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /v1/key HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = await reader.read()
        writer.close()
        return int(answer.split()[1])

    return list(await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(count))))


def test_400_at_once_on_two_replicas_admit_the_limit(tmp_path: Path) -> None:
    assert REDIS_URL
    with serving(build_app(DevstackConfig())) as upstream:
        settings = gateway_settings(
            tmp_path, upstream.url, redis_url=REDIS_URL, replicas=2, catalog_refresh_s=30
        )
        prepare_database(settings, "acme")
        replicas = [ServerThread(create_app(settings), http_limits=settings.http).start()
                    for _ in range(2)]  # fmt: skip
        try:
            key = Gateway(replicas[0].url, settings, "", "acme").issue_key(rpm=RPM)
            while time.time() % 60 > 50:  # one window: not across a minute's edge
                time.sleep(0.5)
            statuses = asyncio.run(burst([r.url for r in replicas], key, 400))
            admitted, shed = statuses.count(200), statuses.count(503)
            assert set(statuses) <= {200, 429, 503}
            # Exact when nothing was shed; a shed decision may have been counted.
            assert RPM - shed <= admitted <= RPM, (admitted, shed)
            for replica in replicas:
                ready = httpx.get(f"{replica.url}/readyz", timeout=10).json()
                assert ready["checks"]["ratelimit"] == "ok"
        finally:
            for replica in replicas:
                replica.stop()
