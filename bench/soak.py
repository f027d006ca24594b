"""The soak: a bounded run at a share of the peak, streams and faults mixed.

    bench/soak                          # 10 minutes at 70% of a measured peak
    bench/soak --minutes 1 --peak 40    # a short one at 70% of a given peak

teegate (SQLite, attested-tls, one worker, CPU 0) in front of a fresh devstack
enclave (CPU 1), as `bench/run` starts them. Unless given, the peak is measured
first: a closed loop of 32 clients for 15 s (half streams) bounds it, then open-loop
probes of 10 s at 30%, 40%, ... of that rate find the highest that keeps up (no
error, whole answers' p99 under 0.5 s). Then, for `--minutes`, an open loop sends
requests at `--load` x peak: half streams, half whole answers;
a share of clients leave early (a stream after a few chunks, an answer before
it comes); every `--fault-every` seconds one upstream fault is switched on for
`--fault-for` seconds, in turn. Every 10 s: error rate, p99 and teegate's RSS.

At the end the ledger's invariants are read from the database, the figures go to
`bench/.work/reliability/soak.json` with a plot (`soak.png`, matplotlib from the
tools venv), and docs/reliability.md is rendered again (`bench.reliability`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import install, procs, reliability, streams, targets
from bench.common import HOST, chat_body, log

OUT = reliability.RESULTS
FAULTS = ("drop-mid-stream", "garbage-sse", "http-500", "no-usage")
"""The bench devstack has no first-token delay to slow down, and a hang would only
measure the read timeout."""
BUCKET_S = 10.0
WARM_UP_S = 60.0
"""RSS growth is measured from the end of the first minute (caches and pools filled)."""
PROBE_S = 10.0
KEEPS_UP_P99_S = 0.5
"""Whole answers take ~5 ms here unloaded: a p99 of half a second means a queue."""
PLOT_SCRIPT = Path(__file__).with_name("soak_plot.py")


@dataclass
class Sample:
    started: float
    kind: str  # "stream" | "whole"
    ok: bool
    latency_s: float
    left: bool  # the client left on purpose: neither an error nor a latency
    in_fault: bool


@dataclass
class Window:
    fault: str
    start: float
    end: float


async def one(
    session: aiohttp.ClientSession, url: str, key: str, stream: bool, leave: bool
) -> tuple[bool, float]:
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        async with session.post(url, data=chat_body(stream=stream), headers=headers) as response:
            if response.status != 200:
                await response.read()
                return False, time.perf_counter() - started
            if not stream:
                if leave:
                    return True, 0.0
                await response.read()
                return True, time.perf_counter() - started
            events = 0
            done = False
            async for line in response.content:
                if line.startswith(b"data: "):
                    events += 1
                    done = line.strip() == b"data: [DONE]"
                    if leave and events >= 3:
                        return True, 0.0
            return done, time.perf_counter() - started
    except (aiohttp.ClientError, TimeoutError):
        return False, time.perf_counter() - started


async def measure_peak(url: str, key: str, seconds: float = 15, clients: int = 32) -> float:
    """A closed loop's rate: an upper bound for the open-loop probes."""
    done = 0
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            ok, _ = await one(session, url, key, stream=i % 2 == 0, leave=False)
            done += ok

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(session, i) for i in range(clients)))
        return done / (time.monotonic() - started)


async def open_loop(rate: float, seconds: float, send: Callable[[], Awaitable[None]]) -> None:
    """Start `send()` `rate` times a second on schedule, whatever the answers do; then
    wait (up to 90 s) for what is under way."""
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic() - start) < seconds:
        due = int(now * rate) + 1
        for _ in range(due - sent):
            task = asyncio.ensure_future(send())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent = due
        await asyncio.sleep(min(0.01, 1 / rate))
    if tasks:
        await asyncio.wait(tasks, timeout=90)


async def sustained_peak(url: str, key: str, closed: float) -> tuple[float, list[dict[str, Any]]]:
    """The highest open-loop rate that keeps up, in steps of a tenth of the closed loop's.

    A closed loop waits for each answer before the next request; an open loop sends
    on schedule, each late request on a new connection, so it finds the queueing a
    closed loop hides (bench/README.md, *Choosing the peak*)."""
    probes: list[dict[str, Any]] = []
    peak = 0.0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        for tenth in range(3, 11):
            result = await probe(session, url, key, closed * tenth / 10)
            probes.append(result)
            log(f"soak: probe {result['rate_rps']:.0f} req/s: {result['errors']} errors, "
                f"p99 whole {result['p99_whole_s']:.3f} s")  # fmt: skip
            if not result["keeps_up"]:
                break
            peak = result["rate_rps"]
    return peak, probes


async def probe(session: aiohttp.ClientSession, url: str, key: str, rate: float) -> dict[str, Any]:
    """`PROBE_S` of an open loop at `rate`, half streams; keeping up is no error and
    whole answers' p99 under `KEEPS_UP_P99_S`."""
    results: list[tuple[bool, bool, float]] = []
    kinds = itertools.cycle((True, False))

    async def send() -> None:
        stream = next(kinds)
        ok, latency = await one(session, url, key, stream, leave=False)
        results.append((stream, ok, latency))

    await open_loop(rate, PROBE_S, send)
    whole = sorted(latency for stream, _, latency in results if not stream)
    p99 = whole[int(0.99 * (len(whole) - 1))] if whole else float("inf")
    errors = sum(not ok for _, ok, _ in results)
    return {"rate_rps": rate, "errors": errors, "p99_whole_s": p99,
            "keeps_up": errors == 0 and p99 < KEEPS_UP_P99_S}  # fmt: skip


async def soak(
    args: argparse.Namespace, url: str, key: str, admin: str, pid: int
) -> dict[str, Any]:
    rate = args.peak * args.load
    duration = args.minutes * 60
    chance = random.Random(18)
    samples: list[Sample] = []
    windows: list[Window] = []
    rss: list[tuple[float, float]] = []
    start = time.monotonic()

    def in_fault(at: float) -> bool:
        # a request that overlaps a window (started before its end, within a timeout)
        return any(w.start - 30 <= at <= w.end for w in windows)

    async def request(session: aiohttp.ClientSession) -> None:
        at = time.monotonic() - start
        stream = chance.random() < 0.5
        leave = chance.random() < args.disconnect
        ok, latency = await one(session, url, key, stream, leave)
        kind = "stream" if stream else "whole"
        samples.append(Sample(at, kind, ok, latency, leave, in_fault(at)))

    async def faults(session: aiohttp.ClientSession) -> None:
        turn = 0
        while True:
            await asyncio.sleep(args.fault_every)
            fault = FAULTS[turn % len(FAULTS)]
            turn += 1
            window = Window(fault, time.monotonic() - start, float("inf"))
            windows.append(window)
            await set_faults(session, admin, [fault])
            await asyncio.sleep(args.fault_for)
            await set_faults(session, admin, [])
            window.end = time.monotonic() - start

    async def memory() -> None:
        while True:
            rss.append((time.monotonic() - start, procs.rss_kb(pid) / 1024))
            await asyncio.sleep(BUCKET_S / 2)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        side = [asyncio.ensure_future(faults(session)), asyncio.ensure_future(memory())]
        await open_loop(rate, duration, functools.partial(request, session))
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        await set_faults(session, admin, [])
    rss.append((time.monotonic() - start, procs.rss_kb(pid) / 1024))
    return {"samples": samples, "windows": windows, "rss": rss, "rate": rate}


async def set_faults(session: aiohttp.ClientSession, admin: str, faults: list[str]) -> None:
    async with session.put(f"{admin}/admin/faults", json={"faults": faults}, ssl=False) as r:
        r.raise_for_status()


def buckets(
    samples: list[Sample], rss: list[tuple[float, float]], end: float
) -> list[dict[str, Any]]:
    rows = []
    t = 0.0
    while t < end:
        inside = [s for s in samples if t <= s.started < t + BUCKET_S and not s.left]
        latencies = [s.latency_s for s in inside if s.ok]
        memory = [m for at, m in rss if at <= t + BUCKET_S]
        rows.append({
            "t": t + BUCKET_S, "requests": len(inside),
            "error_rate": sum(not s.ok for s in inside) / len(inside) if inside else 0.0,
            "p99_s": streams.percentile(latencies, 99) if latencies else None,
            "rss_mib": memory[-1] if memory else None,
        })  # fmt: skip
        t += BUCKET_S
    return rows


def summary(run: dict[str, Any], lost: list[str]) -> dict[str, Any]:
    samples: list[Sample] = run["samples"]
    counted = [s for s in samples if not s.left]
    outside = [s for s in counted if not s.in_fault]
    rss: list[tuple[float, float]] = run["rss"]
    warm = [m for at, m in rss if at >= WARM_UP_S] or [m for _, m in rss]
    p99 = {
        kind: streams.percentile([s.latency_s for s in counted if s.ok and s.kind == kind], 99)
        for kind in ("whole", "stream")
    }
    return {
        "requests": len(samples),
        "left_on_purpose": len(samples) - len(counted),
        "errors_outside_faults": sum(not s.ok for s in outside),
        "error_rate_outside_faults": (sum(not s.ok for s in outside) / len(outside))
        if outside else 0.0,
        "errors_inside_faults": sum(not s.ok for s in counted if s.in_fault),
        "p99_whole_s": p99["whole"], "p99_stream_s": p99["stream"],
        "rss_warm_mib": warm[0], "rss_end_mib": warm[-1],
        "rss_growth": (warm[-1] - warm[0]) / warm[0],
        "lost": lost,
    }  # fmt: skip


async def ledger_lost(database_url: str) -> list[str]:
    """The books' invariants, read from the tables once every hold is settled."""
    from sqlalchemy import text

    from teegate.store import create_engine

    engine = create_engine(database_url)
    checks = {
        "balance != Σ entries": "SELECT count(*) FROM accounts a WHERE a.balance_nano != "
        "(SELECT coalesce(sum(amount_nano), 0) FROM ledger_entries e WHERE e.account_id = a.id)",
        "Σ usage != Σ debits": "SELECT (SELECT coalesce(sum(cost_nano), 0) FROM usage_records)"
        " != (SELECT coalesce(-sum(amount_nano), 0) FROM ledger_entries WHERE kind = 'debit')",
        "held != Σ open holds": "SELECT count(*) FROM accounts a WHERE a.held_nano != "
        "(SELECT coalesce(sum(amount_nano), 0) FROM holds h "
        "WHERE h.account_id = a.id AND h.state = 'open')",
        "overdraft beyond holds": "SELECT count(*) FROM accounts WHERE held_nano > balance_nano "
        "OR held_nano < 0",
        "a hold resolved twice or never": "SELECT (SELECT count(*) FROM usage_records) != "
        "(SELECT count(*) FROM holds WHERE state != 'open')",
    }
    lost: list[str] = []
    try:
        deadline = time.monotonic() + 60
        async with engine.connect() as conn:
            while await conn.scalar(text("SELECT count(*) FROM holds WHERE state = 'open'")):
                if time.monotonic() > deadline:
                    lost.append("holds still open a minute after the run")
                    break
                await conn.commit()
                await asyncio.sleep(0.5)
            for name, query in checks.items():
                if await conn.scalar(text(query)):
                    lost.append(name)
    finally:
        await engine.dispose()
    return lost


def plot(result_path: Path, png: Path) -> None:
    tools_python = install.ensure_tools()
    done = subprocess.run(
        [str(tools_python), str(PLOT_SCRIPT), str(result_path), str(png)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        log(f"soak plot failed: {done.stderr[-500:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--peak", type=float, default=None, help="req/s; measured if not given")
    parser.add_argument("--load", type=float, default=0.7, help="share of the peak")
    parser.add_argument("--disconnect", type=float, default=0.05, help="share leaving early")
    parser.add_argument("--fault-every", type=float, default=30, help="seconds")
    parser.add_argument("--fault-for", type=float, default=5, help="seconds")
    parser.add_argument("--out", type=Path, default=reliability.DOCS)
    args = parser.parse_args(argv)

    upstream = targets.devstack("soak", chunk_delay_ms=10, completion_tokens=40)
    try:
        store = targets.prepare_store("sqlite")
        server = targets.teegate(store, upstream, "attested-tls")
        try:
            url = f"http://{HOST}:{server.port}/v1/chat/completions"
            peak_source, closed = "given", None
            probes: list[dict[str, Any]] = []
            if args.peak is None:
                log("soak: measuring the closed-loop rate (15 s, 32 clients)")
                closed = asyncio.run(measure_peak(url, store.key))
                log(f"soak: closed loop {closed:.1f} req/s; probing open-loop rates")
                args.peak, probes = asyncio.run(sustained_peak(url, store.key, closed))
                peak_source = "measured"
                if not args.peak:
                    raise SystemExit("soak: no open-loop rate kept up; give --peak")
            log(f"soak: {args.minutes:g} min at {args.load:.0%} of {args.peak:.1f} req/s")
            run = asyncio.run(soak(args, url, store.key, upstream.url, server.pid))
        finally:
            server.stop()
        lost = asyncio.run(ledger_lost(store.database_url))
    finally:
        upstream.server.stop()
    samples: list[Sample] = run["samples"]
    end = max((s.started for s in samples), default=0.0)
    result = {
        "minutes": args.minutes, "load": args.load, "peak_rps": args.peak,
        "peak_source": peak_source, "closed_loop_rps": closed, "probes": probes,
        "rate_rps": run["rate"], "store": "SQLite",
        "disconnect_share": args.disconnect, "faults": list(FAULTS),
        "fault_every_s": args.fault_every, "fault_s": args.fault_for,
        "windows": [asdict(w) for w in run["windows"]],
        "timeline": buckets(samples, run["rss"], end),
        "summary": summary(run, lost), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "soak.json"
    path.write_text(json.dumps(result, indent=1))
    plot(path, path.with_suffix(".png"))
    log(f"soak: {json.dumps(result['summary'])}")
    log(f"soak: wrote {reliability.render(OUT / 'faults.jsonl', path, args.out)}")
    s = result["summary"]
    return 0 if not s["lost"] and s["rss_growth"] < 0.10 else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
