"""kill -9 of the gateway mid-stream: the hold it placed is durable, and after a
restart with a short hold TTL the reaper settles it once, at what its last progress
checkpoint shows was delivered: a stream that had delivered nothing costs nothing."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from teegate.billing import nano_to_usd
from teegate.devstack import DevstackConfig, build_app
from tests.support.billing import ENGINES, LedgerState, books, database_url, settled_books
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


def send_and_wait_for_its_hold(base_url: str, key: str, url: str) -> threading.Thread:
    """Send a stream whose upstream has not answered yet; return once its hold is open."""
    body = {"model": V3, "messages": [{"role": "user", "content": "never answered"}],
            "max_tokens": 400, "stream": True}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    deadline = time.monotonic() + 10
    while books(url, "crash").open_holds == 0:
        assert time.monotonic() < deadline, "the request was never held"
        time.sleep(0.05)
    return sender


@dataclass
class Crash:
    url: str
    base_url: str
    key: str
    config: Path
    logs: Path


@contextmanager
def crash_rig(engine: str, tmp_path: Path, devstack: DevstackConfig) -> Iterator[Crash]:
    with database_url(engine, tmp_path) as url, serving(build_app(devstack)) as upstream:
        key = prepare_database(gateway_settings(tmp_path, upstream.url, database_url=url),
                               "crash", credit_usd="10")  # fmt: skip
        port = free_port()
        config = tmp_path / "teegate.toml"
        config.write_text(CONFIG.format(port=port, data_dir=tmp_path, database_url=url,
                                        secret=KEY_SECRET, upstream=upstream.url))  # fmt: skip
        yield Crash(url, f"http://127.0.0.1:{port}", key, config, tmp_path)


def reap_after_restart(crash: Crash) -> tuple[LedgerState, dict[str, Any]]:
    """Start the gateway again with a 1 s TTL; the books once its reaper has settled
    the stranded hold (and passed again: nothing may be counted twice), and its record."""
    with gateway_process(crash.config, crash.logs / "second.log", TEEGATE_HOLD_TTL_S="1") as again:
        wait_healthy(crash.base_url, again)
        reaped = settled_books(crash.url, "crash")
        time.sleep(0.5)
        after = books(crash.url, "crash")
        headers = {"Authorization": f"Bearer {crash.key}"}
        usage = httpx.get(f"{crash.base_url}/v1/usage", headers=headers).json()["data"]
    assert after == reaped
    after.check()
    [record] = usage
    assert (record["settled_by"], record["status"]) == ("expired-hold", "expired")
    return after, record


@pytest.mark.parametrize("engine", ENGINES)
def test_kill_9_mid_stream_then_the_reaper_charges_the_checkpoint_once(
    engine: str, tmp_path: Path
) -> None:
    slow = DevstackConfig(chunk_delay_s=0.05, completion_tokens=400)  # a 20 s stream
    with crash_rig(engine, tmp_path, slow) as crash:
        initial = books(crash.url, "crash")
        # a 2 s lease: renewed, with a checkpoint of what was streamed, every 0.5 s
        with gateway_process(crash.config, tmp_path / "first.log", TEEGATE_HOLD_TTL_S="2") as first:
            wait_healthy(crash.base_url, first)
            with stream_a_little(crash.base_url, crash.key):
                time.sleep(1.2)  # two renewals at least
                first.send_signal(signal.SIGKILL)
                assert first.wait(timeout=10) == -signal.SIGKILL
        stranded = books(crash.url, "crash")
        assert (stranded.open_holds, stranded.balance_nano) == (1, initial.balance_nano)
        assert stranded.held_nano > 0  # the hold was durable before the upstream call
        stranded.check()

        after, record = reap_after_restart(crash)
        assert after.held_nano == 0
        charged = initial.balance_nano - after.balance_nano
        assert after.debits_nano == after.usage_cost_nano == charged
        assert 0 < charged < stranded.held_nano  # what was delivered, not the whole hold
        assert 0 < record["tokens_completion"] < 400
        assert record["total_cost"] == nano_to_usd(charged)
        assert record["held"] == nano_to_usd(stranded.held_nano)


@pytest.mark.parametrize("engine", ENGINES)
def test_kill_9_before_the_first_byte_then_the_reaper_charges_nothing(
    engine: str, tmp_path: Path
) -> None:
    """Issue 18, finding 2: streams that had delivered 0 bytes were charged the full hold."""
    silent = DevstackConfig(faults=frozenset({"slow-first-token"}), first_token_delay_s=6)
    with crash_rig(engine, tmp_path, silent) as crash:
        initial = books(crash.url, "crash")
        with gateway_process(crash.config, tmp_path / "first.log") as first:
            wait_healthy(crash.base_url, first)
            send_and_wait_for_its_hold(crash.base_url, crash.key, crash.url)
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
        assert books(crash.url, "crash").held_nano > 0

        after, record = reap_after_restart(crash)
        assert (after.held_nano, after.balance_nano, after.debits_nano) == (
            0,
            initial.balance_nano,
            0,
        )
        assert (record["total_cost"], record["tokens_prompt"], record["tokens_completion"]) == (
            "0",
            0,
            0,
        )
