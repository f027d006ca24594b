"""The stream load generator (asyncio + aiohttp): latency of paced streams, and many open ones.

* `latency_run`: streams one after another (or a few at once) through a target;
  time to first token (first chunk with content) and the gaps between chunks
  as the client sees them. Run against the upstream alone too, so that what a
  proxy adds is the difference.
* `hold_run`: opens N streams at once against a proxy and, once all are open,
  measures over a window the proxy's resident memory (VmRSS) and its CPU time
  (utime + stime) against the chunks the clients received in that window.
Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import procs

EVENT_END = b"\n\n"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def request_headers(auth: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **(extra or {})}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    return headers


def _has_token(event: bytes) -> bool:
    """A `data:` event whose first choice carries content (the role chunk has "")."""
    if not event.startswith(b"data: ") or event == b"data: [DONE]":
        return False
    try:
        chunk = orjson.loads(event[6:])
    except orjson.JSONDecodeError:
        return False
    choices = chunk.get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


# --- latency -------------------------------------------------------------------------------


@dataclass
class LatencyStats:
    streams: int
    errors: int
    chunks_per_stream: float
    headers_p50_ms: float
    """Request sent -> response headers: what the proxy does before it relays anything."""
    ttft_p50_ms: float
    ttft_p99_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    gap_mean_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Timing:
    headers_s: float = math.nan
    ttft_s: float = math.nan
    arrivals: list[float] = field(default_factory=list)
    done: bool = False


async def _one_stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes
) -> _Timing:
    timing = _Timing()
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        timing.headers_s = time.perf_counter() - started
        if response.status != 200:
            await response.read()
            raise RuntimeError(f"HTTP {response.status}")
        buffer = b""
        async for data in response.content.iter_any():
            now = time.perf_counter()
            buffer += data
            *events, buffer = buffer.split(EVENT_END)
            for raw in events:
                event = raw.strip()
                if event == b"data: [DONE]":
                    timing.done = True
                    continue
                if not event.startswith(b"data: "):
                    continue
                if math.isnan(timing.ttft_s):
                    if not _has_token(event):
                        continue
                    timing.ttft_s = now - started
                timing.arrivals.append(now)
    if not timing.done or math.isnan(timing.ttft_s):
        raise RuntimeError("the stream ended early")
    return timing


async def latency_run(
    url: str,
    body: bytes,
    *,
    auth: str = "",
    headers: Mapping[str, str] | None = None,
    streams: int,
    concurrency: int = 1,
    warmup: int = 2,
    bound_s: float = 120.0,
    ca_file: Path | None = None,
) -> LatencyStats:
    """`streams` paced streams, `concurrency` at a time, after `warmup` unmeasured ones;
    an https target (the upstream alone) is verified against `ca_file`."""
    timeout = aiohttp.ClientTimeout(total=bound_s, sock_read=30)
    verify = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    connector = aiohttp.TCPConnector(limit=0, ssl=verify)
    sent = request_headers(auth, headers)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for _ in range(warmup):
            await _one_stream(session, url, sent, body)
        gate = asyncio.Semaphore(concurrency)
        errors = 0

        async def measured() -> _Timing | None:
            nonlocal errors
            async with gate:
                try:
                    return await _one_stream(session, url, sent, body)
                except (RuntimeError, aiohttp.ClientError, TimeoutError):
                    errors += 1
                    return None

        timings = [t for t in await asyncio.gather(*(measured() for _ in range(streams))) if t]
    ttfts = [t.ttft_s * 1000 for t in timings]
    gaps = [
        (b - a) * 1000 for t in timings for a, b in zip(t.arrivals, t.arrivals[1:], strict=False)
    ]
    chunks = sum(len(t.arrivals) for t in timings)
    return LatencyStats(
        streams=len(timings),
        errors=errors,
        chunks_per_stream=chunks / len(timings) if timings else 0.0,
        headers_p50_ms=percentile([t.headers_s * 1000 for t in timings], 50),
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p99_ms=percentile(ttfts, 99),
        gap_p50_ms=percentile(gaps, 50),
        gap_p99_ms=percentile(gaps, 99),
        gap_mean_ms=sum(gaps) / len(gaps) if gaps else math.nan,
    )


# --- many open streams ----------------------------------------------------------------------


@dataclass
class HoldStats:
    target_streams: int
    opened: int
    failed: int
    open_s: float
    """How long it took until every stream had its first chunk (or the bound hit)."""
    open_at_window: int
    rss_idle_mb: float
    rss_open_mb: float
    rss_per_stream_kb: float
    window_s: float
    chunks_in_window: int
    chunks_per_s: float
    cpu_in_window_s: float
    cpu_per_chunk_us: float
    cpu_share: float
    """CPU seconds per wall second in the window: near 1.0 means the proxy's core was full."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Counts:
    expected: int
    chunks: int = 0
    opened: int = 0
    failed: int = 0
    finished: int = 0
    all_started: asyncio.Event = field(default_factory=asyncio.Event)

    def started_one(self, *, failed: bool) -> None:
        if failed:
            self.failed += 1
        else:
            self.opened += 1
        if self.opened + self.failed >= self.expected:
            self.all_started.set()


async def _held_stream(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    opening: asyncio.Semaphore,
    counts: _Counts,
) -> None:
    opened = False
    await opening.acquire()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            last = b""
            async for data in response.content.iter_any():
                events = data.count(EVENT_END) + (last == b"\n" and data[:1] == b"\n")
                counts.chunks += events
                last = data[-1:]
                if not opened and events:
                    opened = True
                    counts.started_one(failed=False)
                    opening.release()
        counts.finished += 1
    except (RuntimeError, aiohttp.ClientError, TimeoutError):
        if opened:
            counts.finished += 1
        else:
            counts.started_one(failed=True)
    finally:
        if not opened:
            opening.release()


async def _open_many(
    url: str,
    body: bytes,
    headers: dict[str, str],
    n: int,
    open_parallel: int,
    open_bound_s: float,
    counts: _Counts,
) -> tuple[aiohttp.ClientSession, list[asyncio.Task[None]], float]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
    session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
    opening = asyncio.Semaphore(open_parallel)
    started = time.perf_counter()
    tasks = [
        asyncio.ensure_future(_held_stream(session, url, headers, body, opening, counts))
        for _ in range(n)
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counts.all_started.wait(), open_bound_s)
    return session, tasks, time.perf_counter() - started


async def _close_all(session: aiohttp.ClientSession, tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()


async def hold_run(
    url: str,
    body: bytes,
    *,
    pid: int,
    auth: str = "",
    headers: Mapping[str, str] | None = None,
    streams: int,
    window_s: float,
    open_parallel: int = 256,
    open_bound_s: float = 60.0,
    settle_s: float = 1.0,
    warmup_streams: int = 64,
) -> HoldStats:
    """Open `streams` streams, then measure memory and CPU per chunk over `window_s`."""
    sent = request_headers(auth, headers)
    warm = _Counts(warmup_streams)
    session, tasks, _ = await _open_many(
        url, body, sent, warmup_streams, open_parallel, open_bound_s, warm
    )
    await asyncio.sleep(0.5)
    await _close_all(session, tasks)
    await asyncio.sleep(1.0)  # let the proxy finish settling the abandoned streams
    rss_idle = procs.rss_kb(pid)

    counts = _Counts(streams)
    session, tasks, open_s = await _open_many(
        url, body, sent, streams, open_parallel, open_bound_s, counts
    )
    try:
        await asyncio.sleep(settle_s)
        open_at_window = counts.opened - counts.finished
        cpu0, chunks0, t0 = procs.cpu_s(pid), counts.chunks, time.perf_counter()
        rss_peak = procs.rss_kb(pid)
        while time.perf_counter() - t0 < window_s:
            await asyncio.sleep(0.5)
            rss_peak = max(rss_peak, procs.rss_kb(pid))
        cpu1, chunks1, t1 = procs.cpu_s(pid), counts.chunks, time.perf_counter()
    finally:
        await _close_all(session, tasks)
    chunks = chunks1 - chunks0
    cpu = cpu1 - cpu0
    held = max(1, open_at_window)
    return HoldStats(
        target_streams=streams,
        opened=counts.opened,
        failed=counts.failed,
        open_s=open_s,
        open_at_window=open_at_window,
        rss_idle_mb=rss_idle / 1024,
        rss_open_mb=rss_peak / 1024,
        rss_per_stream_kb=(rss_peak - rss_idle) / held,
        window_s=t1 - t0,
        chunks_in_window=chunks,
        chunks_per_s=chunks / (t1 - t0),
        cpu_in_window_s=cpu,
        cpu_per_chunk_us=cpu / chunks * 1e6 if chunks else math.nan,
        cpu_share=cpu / (t1 - t0),
    )


def run(coro: Any) -> Any:
    """Run on uvloop when present, as the servers do."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
