"""A client that goes away cancels its upstream request: no generation left running."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from teegate.app import create_app
from teegate.devstack import DevstackConfig, build_app
from tests.support.gateway import Devstack, Gateway, gateway_settings, prepare_database
from tests.support.servers import serving

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"


@pytest.fixture(scope="module")
def paced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Devstack]]:
    config = DevstackConfig(chunk_delay_s=0.05, completion_tokens=400)
    with serving(build_app(config)) as upstream:
        settings = gateway_settings(
            tmp_path_factory.mktemp("paced"),
            upstream.url,
            timeouts={"connect_s": 2, "read_s": 30, "catalog_s": 2},
        )
        key = prepare_database(settings, "paced")
        with serving(create_app(settings)) as server:
            yield Gateway(server.url, settings, key, "paced"), Devstack(upstream.url)


def wait_until_idle(devstack: Devstack) -> None:
    deadline = time.monotonic() + 5
    while devstack.admin("GET", "stats")["chat_in_flight"] != 0:
        assert time.monotonic() < deadline, "the upstream request was left running"
        time.sleep(0.02)


def wait_until_busy(devstack: Devstack) -> None:
    deadline = time.monotonic() + 5
    while devstack.admin("GET", "stats")["chat_in_flight"] == 0:
        assert time.monotonic() < deadline, "the upstream never saw the request"
        time.sleep(0.01)


def chat_body(stream: bool) -> dict[str, object]:
    return {"model": R1, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def test_client_leaving_mid_stream_cancels_upstream(paced: tuple[Gateway, Devstack]) -> None:
    gateway, devstack = paced
    headers = {"Authorization": f"Bearer {gateway.key}"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=chat_body(True), headers=headers
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
        wait_until_busy(devstack)
    wait_until_idle(devstack)


@pytest.mark.parametrize("stream", [False, True])
def test_client_leaving_while_upstream_hangs_cancels_upstream(
    paced: tuple[Gateway, Devstack], stream: bool
) -> None:
    gateway, devstack = paced
    devstack.set_faults("hang")
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json=chat_body(stream),
                headers={"Authorization": f"Bearer {gateway.key}"},
                timeout=0.5,
            )
        wait_until_idle(devstack)
    finally:
        devstack.set_faults()
