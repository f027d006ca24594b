"""A client that goes away cancels its upstream request: no generation left running."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from teegate.app import create_app
from teegate.devstack import DevstackConfig, build_app
from tests.conftest import Devstack, Gateway, gateway_settings, prepare_database
from tests.servers import serving
from tests.support.metrics import metric

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
CHAT_ANSWERED = 'teegate_requests_total{route="/v1/chat/completions",status="%d"}'


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
    """And is logged and counted as 499, nginx's "client closed request", not as an
    upstream failure (502)."""
    gateway, devstack = paced
    before = {status: metric(gateway.url, CHAT_ANSWERED % status) for status in (499, 502)}
    devstack.set_faults("hang")
    try:
        with capture_logs() as logs:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{gateway.url}/v1/chat/completions",
                    json=chat_body(stream),
                    headers={"Authorization": f"Bearer {gateway.key}"},
                    timeout=0.5,
                )
            wait_until_idle(devstack)
            access = wait_for_access_log(logs)
    finally:
        devstack.set_faults()
    assert (access["route"], access["status"]) == ("/v1/chat/completions", 499)
    assert metric(gateway.url, CHAT_ANSWERED % 499) == before[499] + 1
    assert metric(gateway.url, CHAT_ANSWERED % 502) == before[502]


def test_client_leaving_while_sending_its_body_is_499(paced: tuple[Gateway, Devstack]) -> None:
    gateway, _ = paced
    before = metric(gateway.url, CHAT_ANSWERED % 499)
    url = httpx.URL(gateway.url)
    with socket.create_connection((url.host, url.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
            b"Authorization: Bearer " + gateway.key.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model":'
        )
    wait_for_metric(gateway, CHAT_ANSWERED % 499, before + 1)


def wait_for_metric(gateway: Gateway, sample: str, value: float) -> None:
    """The access is counted when the gateway's request ends, just after the client's."""
    deadline = time.monotonic() + 5
    while metric(gateway.url, sample) != value:
        assert time.monotonic() < deadline, f"{sample} is {metric(gateway.url, sample)}"
        time.sleep(0.02)


def wait_for_access_log(logs: list[MutableMapping[str, Any]]) -> MutableMapping[str, Any]:
    """The one access-log line, written when the gateway's request ends."""
    deadline = time.monotonic() + 5
    while not (lines := [line for line in logs if line["event"] == "request"]):
        assert time.monotonic() < deadline, "no access-log line"
        time.sleep(0.02)
    (line,) = lines
    return line
