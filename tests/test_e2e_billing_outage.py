"""A PostgreSQL outage fails closed: requests are refused with 503
`service_unavailable` and nothing reaches the upstream."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy.engine import make_url

from teegate.app import create_app
from teegate.auth import KEY_CACHE_TTL_S
from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import ENGINES, TcpProxy, books, database_url
from tests.support.gateway import Devstack, Gateway, gateway_settings, prepare_database
from tests.support.metrics import metrics_text
from tests.support.servers import serving

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"


@pytest.mark.parametrize("engine", [p for p in ENGINES if p != "sqlite"])
def test_a_database_outage_is_503_before_any_upstream_call(engine: str, tmp_path: Path) -> None:
    with database_url(engine, tmp_path) as url, serving(build_app(DevstackConfig())) as upstream:
        direct = make_url(url)
        proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
        try:
            proxied = direct.set(host="127.0.0.1", port=proxy.port)
            settings = gateway_settings(tmp_path, upstream.url,
                                        database_url=proxied.render_as_string(False))  # fmt: skip
            key = prepare_database(settings, "acme")
            devstack = Devstack(upstream.url)
            with serving(create_app(settings)) as server:
                client = Gateway(server.url, settings, key, "acme").client()
                messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
                assert client.chat.completions.create(model=V3, messages=messages).choices
                # An answer is settled just after it is sent; a balance read waits for
                # that, so the outage below starts with no settlement in flight.
                balance = httpx.get(
                    f"{server.url}/v1/balance", headers={"Authorization": f"Bearer {key}"}
                )
                assert (balance.status_code, balance.json()["held"]) == (200, "0")
                before = devstack.chat_requests()
                proxy.cut()
                for wait_s in (0, KEY_CACHE_TTL_S + 0.1):  # the key cached, then looked up
                    time.sleep(wait_s)
                    with pytest.raises(openai.APIStatusError) as info:
                        client.chat.completions.create(model=V3, messages=messages)
                    assert (info.value.status_code, info.value.code) == (
                        503, "service_unavailable",
                    )  # fmt: skip
                    assert info.value.message.endswith("billing is unavailable")
                assert devstack.chat_requests() == before
                ready = httpx.get(f"{server.url}/readyz")
                assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"

                proxy.restore()  # recovery without a restart
                deadline = time.monotonic() + 10
                while True:
                    try:
                        completion = client.chat.completions.create(model=V3, messages=messages)
                        break
                    except openai.APIStatusError as exc:
                        assert exc.status_code == 503
                        assert time.monotonic() < deadline, "never recovered"
                        time.sleep(0.2)
                assert completion.choices
                assert httpx.get(f"{server.url}/readyz").status_code == 200
            state = books(url, "acme")
            state.check()
            assert state.open_holds == 0
        finally:
            proxy.close()


@pytest.mark.parametrize("engine", [p for p in ENGINES if p != "sqlite"])
def test_a_settlement_refused_by_an_outage_is_retried_at_the_real_usage(
    engine: str, tmp_path: Path
) -> None:
    """Deliverable 2: a settlement that failed after the answer was sent was left to the
    reaper, which posted the held amount; now it waits in memory, its lease renewed,
    and is written once the database is back, from the usage the upstream reported."""
    slow = DevstackConfig(chunk_delay_s=0.05, completion_tokens=40)  # a 2 s stream
    with database_url(engine, tmp_path) as url, serving(build_app(slow)) as upstream:
        direct = make_url(url)
        proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
        try:
            proxied = direct.set(host="127.0.0.1", port=proxy.port)
            settings = gateway_settings(tmp_path, upstream.url, hold_ttl_s=2,
                                        database_url=proxied.render_as_string(False))  # fmt: skip
            key = prepare_database(settings, "acme")
            with serving(create_app(settings)) as server:
                client = Gateway(server.url, settings, key, "acme").client()
                messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
                with client.chat.completions.with_streaming_response.create(
                    model=V3, messages=messages, max_tokens=200, stream=True
                ) as response:
                    request_id = response.headers["x-request-id"]
                    chunks = response.parse()
                    next(iter(chunks))
                    proxy.cut()  # the stream goes on; its settlement will find no database
                    assert list(chunks)
                deferred = "teegate_settlements_deferred 1.0"
                deadline = time.monotonic() + 10
                while deferred not in metrics_text(server.url):
                    assert time.monotonic() < deadline, "the settlement was never deferred"
                    time.sleep(0.05)
                time.sleep(2.5)  # longer than the lease: only its renewals keep it open
                proxy.restore()
                deadline = time.monotonic() + 20
                while True:
                    answer = httpx.get(
                        f"{server.url}/v1/generation",
                        params={"id": request_id},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    if answer.status_code == 200:
                        break
                    assert time.monotonic() < deadline, "the settlement was never retried"
                    time.sleep(0.2)
            record = answer.json()["data"]
            assert (record["settled_by"], record["status"], record["tokens_completion"]) == (
                "usage",
                "ok",
                40,
            )
            state = books(url, "acme")
            state.check()
            assert state.open_holds == 0
        finally:
            proxy.close()
