"""Each fault of the upstream and of the clients, tried N times (`TEEGATE_FAULTS_N`)
under concurrent streams and whole answers, against a real `teegate serve` process.

After each: the ledger's invariants (tests/support/reliability.lost_in_books), and
the gateway's file descriptors and connections back to their baseline. Every fault
appends its record to the results file docs/reliability.md is rendered from.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.reliability import (
    LOAD,
    Outcome,
    Rig,
    Trial,
    in_flight,
    lost_in_books,
    mixed_load,
    settle_resources,
    start_rig,
    tries,
)

Expect = Callable[[Outcome], bool]


def answered(outcome: Outcome) -> bool:
    return outcome.status == 200 and outcome.complete


def failed_cleanly(status: int) -> Expect:
    """Refused with `status` before anything was delivered, or (a stream whose
    upstream failed after its 200) cut short."""
    return lambda o: o.status == status or (o.stream and o.status == 200 and not o.complete)


def finish(rig: Rig, trial: Trial) -> None:
    trial.lost += asyncio.run(lost_in_books(rig.database_url, rig.account, trial.outcomes))
    trial.leaks = settle_resources(rig.gateway.resources, rig.baseline)
    trial.assert_nothing_lost()


UPSTREAM_FAULTS = [
    # fault, what every client must see
    ("drop-mid-stream", lambda o: answered(o) if not o.stream else o.status == 200, "200"),
    ("no-usage", answered, "200, complete"),
    ("garbage-sse", lambda o: answered(o) if not o.stream else o.status == 200, "200"),
    ("http-500", failed_cleanly(502), "502"),
    ("hang", failed_cleanly(504), "504"),
    ("slow-first-token", answered, "200, complete"),
]


@pytest.mark.parametrize(
    ("fault", "expect", "what"), UPSTREAM_FAULTS, ids=[f for f, _, _ in UPSTREAM_FAULTS]
)
def test_upstream_fault_loses_nothing(rig: Rig, fault: str, expect: Expect, what: str) -> None:
    trial = Trial("upstream", fault)
    try:
        for _ in range(tries()):
            rig.devstack.set_faults(fault)
            trial.outcomes += asyncio.run(mixed_load(rig.gateway.url, rig.key, LOAD))
            trial.tries += 1
    finally:
        rig.devstack.set_faults()
    trial.expect(expect, what)
    finish(rig, trial)


def test_clients_leaving_at_random_points_lose_nothing(rig: Rig) -> None:
    """Streams abandoned after 0 to 8 chunks, whole answers after 0 to 0.4 s."""
    trial = Trial("clients", "disconnect at a random point")
    chance = random.Random(18)
    for _ in range(tries()):
        trial.outcomes += asyncio.run(mixed_load(rig.gateway.url, rig.key, LOAD, disconnect=chance))
        trial.tries += 1
    assert any(o.error == "client left" or (o.stream and not o.complete) for o in trial.outcomes)
    finish(rig, trial)


SLOW_CLIENTS = 16


def slow_clients(rig: Rig, body: bool, count: int = SLOW_CLIENTS) -> list[socket.socket]:
    """Connections that send a request's headers (or, with `body`, its body) a few
    bytes at a time and never finish."""
    host, port = "127.0.0.1", int(rig.gateway.url.rsplit(":", 1)[1])
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + rig.key.encode() + b"\r\n"
    )
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, port))
        sock.sendall(head + (b"Content-Length: 4096\r\n\r\n{" if body else b"X-Slow: "))
        sockets.append(sock)
    return sockets


def trickle(sockets: list[socket.socket], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sock in sockets:
            try:
                sock.sendall(b"a")
            except OSError:
                continue
        time.sleep(0.2)


@pytest.mark.parametrize("body", [False, True], ids=["slow headers", "slow body"])
def test_a_slowloris_client_starves_no_one_and_loses_nothing(rig: Rig, body: bool) -> None:
    """While slow connections trickle bytes in, every other client is answered."""
    trial = Trial("clients", f"slowloris ({'slow body' if body else 'slow headers'})")
    sockets = slow_clients(rig, body)
    try:
        for _ in range(tries()):
            trickle(sockets, 0.5)
            trial.outcomes += asyncio.run(mixed_load(rig.gateway.url, rig.key, LOAD))
            trial.tries += 1
    finally:
        for sock in sockets:
            sock.close()
    trial.expect(answered, "200, complete")
    finish(rig, trial)


def closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    sock.settimeout(wait_s)
    try:
        return sock.recv(4096) is not None  # an answer (408) or EOF: either way, closed
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_slowloris_connection_is_closed_by_the_gateway(rig: Rig) -> None:
    [sock] = slow_clients(rig, body=False, count=1)
    try:
        assert closed_by_server(sock, wait_s=15)
    finally:
        sock.close()


def test_gateway_sigkill_mid_load_then_restart_loses_nothing(upstream: str, tmp_path: Path) -> None:
    """kill -9 while streams and whole answers are in flight, then a restart: the
    holds of the killed requests are settled once by the reaper (short hold TTL)."""
    rig = start_rig(tmp_path, upstream, f"sqlite+aiosqlite:///{tmp_path / 'teegate.db'}",
                    env={"TEEGATE_HOLD_TTL_S": "1"})  # fmt: skip
    trial = Trial("process", "gateway SIGKILL + restart")
    try:
        for _ in range(tries()):
            trial.outcomes += asyncio.run(kill_mid_load(rig))
            rig.gateway.start()
            trial.tries += 1
        assert sum(not o.complete for o in trial.outcomes) > 0  # some were cut by the kill
        # A new process: its baseline is its own, after the same warm-up.
        trial.outcomes += asyncio.run(mixed_load(rig.gateway.url, rig.key, LOAD))
        rig.baseline = rig.gateway.resources()
        trial.outcomes += asyncio.run(mixed_load(rig.gateway.url, rig.key, LOAD))
        finish(rig, trial)
    finally:
        rig.gateway.stop()


async def kill_mid_load(rig: Rig) -> list[Outcome]:
    load = asyncio.ensure_future(mixed_load(rig.gateway.url, rig.key, LOAD))
    await in_flight(rig.devstack, LOAD // 4)
    await asyncio.to_thread(rig.gateway.kill)
    return await load
