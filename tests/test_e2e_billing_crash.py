"""kill -9 of the gateway mid-stream: the hold it placed is durable, and after a
restart with a short hold TTL the reaper posts it once, at its held amount."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from teegate.billing import nano_to_usd
from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import ENGINES, books, database_url, settled_books
from tests.support.gateway import KEY_SECRET, gateway_settings, prepare_database
from tests.support.processes import gateway_process, wait_healthy
from tests.support.servers import free_port, serving

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"

CONFIG = """\
environment = "development"
port = {port}
data_dir = "{data_dir}"
database_url = "{database_url}"
key_hash_secret = "{secret}"
reaper_interval_s = 0.2

[timeouts]
connect_s = 2
read_s = 30
catalog_s = 2

[[upstreams]]
name = "devstack"
base_url = "{upstream}"
attestation = "provider-asserted"
"""


@contextmanager
def stream_a_little(base_url: str, key: str) -> Iterator[None]:
    """Start a long stream, read a few events of it, and leave it running."""
    body = {"model": V3, "messages": [{"role": "user", "content": "a long one"}],
            "max_tokens": 400, "stream": True}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{base_url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert sum(1 for _, line in zip(range(8), lines, strict=False) if line.startswith("data:"))
        yield


@pytest.mark.parametrize("engine", ENGINES)
def test_kill_9_mid_stream_then_the_reaper_settles_the_hold_once(
    engine: str, tmp_path: Path
) -> None:
    slow = DevstackConfig(chunk_delay_s=0.05, completion_tokens=400)  # a 20 s stream
    with database_url(engine, tmp_path) as url, serving(build_app(slow)) as upstream:
        key = prepare_database(gateway_settings(tmp_path, upstream.url, database_url=url),
                               "crash", credit_usd="10")  # fmt: skip
        port = free_port()
        config = tmp_path / "teegate.toml"
        config.write_text(CONFIG.format(port=port, data_dir=tmp_path, database_url=url,
                                        secret=KEY_SECRET, upstream=upstream.url))  # fmt: skip
        base_url = f"http://127.0.0.1:{port}"
        initial = books(url, "crash")

        with gateway_process(config, tmp_path / "first.log") as first:
            wait_healthy(base_url, first)
            with stream_a_little(base_url, key):
                first.send_signal(signal.SIGKILL)
                assert first.wait(timeout=10) == -signal.SIGKILL
        stranded = books(url, "crash")
        assert (stranded.open_holds, stranded.balance_nano) == (1, initial.balance_nano)
        assert stranded.held_nano > 0  # the hold was durable before the upstream call
        stranded.check()

        with gateway_process(config, tmp_path / "second.log", TEEGATE_HOLD_TTL_S="1") as second:
            wait_healthy(base_url, second)
            reaped = settled_books(url, "crash")
            time.sleep(0.5)  # more reaper passes: nothing may be counted twice
            after = books(url, "crash")
            headers = {"Authorization": f"Bearer {key}"}
            usage = httpx.get(f"{base_url}/v1/usage", headers=headers).json()["data"]
        assert after == reaped
        after.check()
        assert after.held_nano == 0
        assert after.balance_nano == initial.balance_nano - stranded.held_nano
        assert after.debits_nano == after.usage_cost_nano == stranded.held_nano
        [record] = usage
        assert (record["settled_by"], record["status"]) == ("expired-hold", "expired")
        assert record["total_cost"] == record["held"] == nano_to_usd(stranded.held_nano)
