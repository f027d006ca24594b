"""Open-stream scale: one worker holding thousands of slow streams at once.

Each stream comes from a paced upstream (one chunk a second, long enough to
outlast the measurement), so what is measured is what a proxy pays to *hold*
streams, not to relay a burst: the load generator (asyncio + aiohttp on uvloop, no
connection limit) opens `streams` streams, `open_parallel` at a time, until every
one has its first chunk (the time to open all), lets them run `settle_s`, then
over `window_s` reads

* the gaps between chunks at the client (p50, p99): the upstream's 1 s pace
  plus what the proxy adds; the report subtracts the bare proxy's at the same count;
* the proxy's RSS (VmRSS of its process tree) against its RSS before, per open stream;
* the proxy's CPU (utime + stime) per chunk the clients received;
* its open file descriptors (/proc/<pid>/fd), and the upstream's and the load
  generator's own CPU use, which say whether the harness, not the proxy, was the limit;

then closes every stream from the client side. Errors are streams that did not
open (non-200, refused, reset, timed out) plus open streams that broke before the
client closed them. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from bench import procs
from bench.streams import EVENT_END, percentile, request_headers

NOFILE = 262_144
"""The fd limit the bench raises itself (and so every server it starts) to: 10,000
streams cost a proxy two sockets each, past the usual 1,024 or 20,000."""

PACE_MS = 1000.0
CHUNKS = 900
"""Chunks per upstream stream: 15 min at 1 s, longer than any count's measurement."""


def raise_fd_limit(wanted: int = NOFILE) -> int:
    """Raise RLIMIT_NOFILE (soft, and hard when allowed: root); returns the soft limit.

    Children inherit it, so call it before starting the servers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
        return max(soft, wanted)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


@dataclass
class ScaleStats:
    target_streams: int
    opened: int
    errors: int
    open_s: float
    """Start -> every stream has its first chunk (or the bound hit)."""
    open_at_window: int
    window_s: float
    gaps: int
    gap_p50_ms: float
    gap_p99_ms: float
    rss_idle_mb: float
    rss_open_mb: float
    rss_per_stream_kb: float
    chunks_in_window: int
    cpu_per_chunk_us: float
    cpu_share: float
    """Proxy CPU seconds per wall second in the window (1.0: its core was full)."""
    fds_open: int
    upstream_cpu_share: float
    loadgen_cpu_share: float
    first_error: str = ""
    books: dict[str, Any] | None = None
    """teegate only: its holds and books after the streams closed (run.py fills it)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _State:
    expected: int
    opened: int = 0
    failed: int = 0
    broke: int = 0
    chunks: int = 0
    recording: bool = False
    gaps: list[float] = field(default_factory=list)
    first_error: str = ""
    all_started: asyncio.Event = field(default_factory=asyncio.Event)

    def started_one(self, *, failed: bool) -> None:
        if failed:
            self.failed += 1
        else:
            self.opened += 1
        if self.opened + self.failed >= self.expected:
            self.all_started.set()

    def error(self, exc: BaseException) -> None:
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"[:300]


async def _stream(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    opening: asyncio.Semaphore,
    state: _State,
) -> None:
    opened = False
    await opening.acquire()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {(await response.read())[:200]!r}")
            last = math.nan
            async for data in response.content.iter_any():
                events = data.count(EVENT_END)
                if not events:
                    continue
                now = time.perf_counter()
                state.chunks += events
                if not opened:
                    opened = True
                    state.started_one(failed=False)
                    opening.release()
                elif state.recording and not math.isnan(last):
                    state.gaps.append(now - last)
                last = now if state.recording else math.nan
        raise RuntimeError("the stream ended before the client closed it")
    except asyncio.CancelledError:
        raise
    except (RuntimeError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        state.error(exc)
        if opened:
            state.broke += 1
        else:
            state.started_one(failed=True)
    finally:
        if not opened:
            opening.release()


def _fds(pid: int) -> int:
    total = 0
    for p in procs.tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


async def scale_run(
    url: str,
    body: bytes,
    *,
    pid: int,
    upstream_pid: int,
    auth: str = "",
    headers: Mapping[str, str] | None = None,
    streams: int,
    window_s: float,
    open_parallel: int = 256,
    open_bound_s: float = 300.0,
    settle_s: float = 3.0,
) -> ScaleStats:
    """Hold `streams` paced streams through the proxy at `pid`; measure over `window_s`."""
    sent = request_headers(auth, headers)
    await asyncio.sleep(1.0)
    rss_idle = procs.rss_kb(pid)
    state = _State(streams)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        opening = asyncio.Semaphore(open_parallel)
        started = time.perf_counter()
        tasks = [
            asyncio.ensure_future(_stream(session, url, sent, body, opening, state))
            for _ in range(streams)
        ]
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.all_started.wait(), open_bound_s)
            open_s = time.perf_counter() - started
            await asyncio.sleep(settle_s)
            open_at_window = state.opened - state.broke
            state.recording = True
            cpu0, up0, own0 = procs.cpu_s(pid), procs.cpu_s(upstream_pid), time.process_time()
            chunks0, t0 = state.chunks, time.perf_counter()
            rss_peak, fds = procs.rss_kb(pid), _fds(pid)
            while time.perf_counter() - t0 < window_s:
                await asyncio.sleep(1.0)
                rss_peak = max(rss_peak, procs.rss_kb(pid))
            cpu1, up1, own1 = procs.cpu_s(pid), procs.cpu_s(upstream_pid), time.process_time()
            chunks1, t1 = state.chunks, time.perf_counter()
            state.recording = False
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    wall = t1 - t0
    chunks = chunks1 - chunks0
    gaps_ms = [g * 1000 for g in state.gaps]
    return ScaleStats(
        target_streams=streams,
        opened=state.opened,
        errors=state.failed + state.broke,
        open_s=open_s,
        open_at_window=open_at_window,
        window_s=wall,
        gaps=len(gaps_ms),
        gap_p50_ms=percentile(gaps_ms, 50),
        gap_p99_ms=percentile(gaps_ms, 99),
        rss_idle_mb=rss_idle / 1024,
        rss_open_mb=rss_peak / 1024,
        rss_per_stream_kb=(rss_peak - rss_idle) / max(1, open_at_window),
        chunks_in_window=chunks,
        cpu_per_chunk_us=(cpu1 - cpu0) / chunks * 1e6 if chunks else math.nan,
        cpu_share=(cpu1 - cpu0) / wall,
        fds_open=fds,
        upstream_cpu_share=(up1 - up0) / wall,
        loadgen_cpu_share=(own1 - own0) / wall,
        first_error=state.first_error,
    )


def books_after(database_url: str, account: str, bound_s: float = 60.0) -> dict[str, Any]:
    """teegate's books once its streams are closed: waits (bounded) for every hold to
    settle, then checks the ledger's invariants (the test suite's own reader)."""
    from tests.support.billing import books

    started = time.monotonic()
    state = books(database_url, account)
    while state.open_holds and time.monotonic() - started < bound_s:
        time.sleep(0.5)
        state = books(database_url, account)
    problem = ""
    try:
        state.check()
    except AssertionError as exc:
        problem = str(exc) or "invariant failed"
    return {
        "open_holds": state.open_holds,
        "settle_s": round(time.monotonic() - started, 1),
        "holds": state.holds,
        "usage_records": state.usage_records,
        "exact": not problem and state.open_holds == 0,
        "problem": problem,
    }
