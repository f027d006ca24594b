"""A database that stalls (a network partition: nothing refused, nothing answered) is
an outage like one that refuses: every wait on it is bounded, and the request is
refused with 503 `service_unavailable` instead of hanging."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from teegate.app import create_app
from teegate.auth import KEY_CACHE_TTL_S
from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import TcpProxy, database_url
from tests.support.gateway import Devstack, gateway_settings, prepare_database
from tests.support.servers import serving

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
CHAT = {"model": V3, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def test_a_stalled_database_is_503_not_a_hang(tmp_path: Path) -> None:
    with database_url("postgresql", tmp_path) as url, serving(build_app(DevstackConfig())) as up:
        direct = make_url(url)
        proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
        try:
            proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
            settings = gateway_settings(
                tmp_path,
                up.url,
                database_url=proxied,
                database_statement_timeout_s=1,
                database_connect_timeout_s=1,
                database_pool_timeout_s=1,
            )
            key = prepare_database(settings, "acme")
            auth = {"Authorization": f"Bearer {key}"}
            with serving(create_app(settings)) as server:
                chat = f"{server.url}/v1/chat/completions"
                assert httpx.post(chat, json=CHAT, headers=auth, timeout=30).status_code == 200
                balance = httpx.get(f"{server.url}/v1/balance", headers=auth, timeout=30)
                assert (balance.status_code, balance.json()["held"]) == (200, "0")
                before = Devstack(up.url).chat_requests()
                proxy.stall()
                for wait_s in (0, KEY_CACHE_TTL_S + 0.1):  # the key cached, then looked up
                    time.sleep(wait_s)
                    answer = httpx.post(chat, json=CHAT, headers=auth, timeout=60)
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["error"]["code"] == "service_unavailable"
                assert Devstack(up.url).chat_requests() == before
                proxy.cut()  # the gateway's shutdown need not wait on stalled connections
        finally:
            proxy.close()


@pytest.mark.parametrize("setting", ["database_statement_timeout_s", "database_pool_timeout_s"])
def test_the_store_timeouts_are_settings(tmp_path: Path, setting: str) -> None:
    overrides: dict[str, Any] = {setting: 2.5}
    settings = gateway_settings(tmp_path, "http://127.0.0.1:1", **overrides)
    assert getattr(settings, setting) == 2.5
