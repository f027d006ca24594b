"""Where teegate's CPU goes per request: py-spy samples under wrk load, folded by function.

py-spy runs non-blocking (it does not pause the server) and writes collapsed
stacks (`frame;frame;... count`). Only the event-loop thread's samples are
folded: py-spy cannot tell a helper thread blocked in `queue.get()` (aiosqlite's
idle worker) from a busy one, so helper threads are measured by their CPU time
in /proc/<pid>/task/<tid>/stat instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.common import HARNESS_CPU, WORK
from bench.wrk import run_wrk

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
AREAS = (
    ("teegate/", "teegate"),
    ("sqlalchemy/", "sqlalchemy"),
    ("aiosqlite/", "aiosqlite"),
    ("sqlite3/", "sqlite3"),
    ("asyncpg/", "asyncpg"),
    ("aiohttp/", "aiohttp (upstream client)"),
    ("starlette/", "starlette"),
    ("uvicorn/", "uvicorn"),
    ("anyio/", "anyio"),
    ("structlog/", "structlog (logs)"),
    ("prometheus_client/", "prometheus_client"),
    ("pydantic", "pydantic"),
    ("asyncio/", "asyncio"),
    ("concurrent/", "threads"),
    ("threading.py", "threads"),
    ("queue.py", "threads"),
    ("logging/", "logging"),
)


LOOP_FRAMES = ("asyncio.runners.Runner.run", "asyncio.base_events.BaseEventLoop.run_until_complete")
"""The innermost Python frame while uvloop's C code runs (sockets, timers, callbacks)."""


@dataclass
class Profile:
    samples: int
    requests: int
    rps: float
    cpu_per_request_us: float
    loop_cpu_per_request_us: float
    """The event-loop thread's share of cpu_per_request_us; the rest is helper threads."""
    cpu_share: float
    """CPU seconds per wall second of the whole process under load (1.0 = its core is full)."""
    helper_threads: int
    by_area: list[tuple[str, float, float]] = field(default_factory=list)
    """(area, % of samples spent in its own code, µs per request)"""
    top_self: list[tuple[str, float, float]] = field(default_factory=list)
    top_teegate: list[tuple[str, float, float]] = field(default_factory=list)
    """teegate functions by inclusive time: (function, % of samples, µs per request)"""
    raw_path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse(line: str) -> tuple[list[str], int] | None:
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack or not count.isdigit():
        return None
    return stack.split(";"), int(count)


def _short(frame: str) -> tuple[str, str]:
    """(`module.function`, file) of a py-spy frame `function (path/file.py:line)`."""
    match = FRAME.match(frame)
    if not match:
        return frame, ""
    path = match["file"]
    module = path
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in module:
            module = module.split(marker, 1)[1]
    module = module.removeprefix(".11/").removesuffix(".py").replace("/", ".")
    return f"{module}.{match['func']}", path


def _area(name: str, path: str) -> str:
    if name in LOOP_FRAMES:
        return "uvloop/libuv C code (sockets, timers, callbacks)"
    for marker, name in AREAS:
        if marker in path:
            return name
    return "other (stdlib, C calls)"


@dataclass(frozen=True)
class Load:
    """What a profiled run did: requests, wall time and CPU by thread."""

    requests: int
    rps: float
    wall_s: float
    loop_cpu_s: float
    helper_cpu_s: float
    helper_threads: int


def summarise(raw: Path, load: Load, top: int = 15) -> Profile:
    selfs: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        parsed = _parse(line)
        if parsed is None:
            continue
        frames, count = parsed
        if frames[0].startswith("Thread._bootstrap"):
            continue  # a helper thread: measured from /proc instead
        named = [_short(f) for f in frames]
        total += count
        leaf, leaf_path = named[-1]
        selfs[leaf] += count
        areas[_area(leaf, leaf_path)] += count
        entry = "teegate/cli.py"
        for name in {n for n, path in named if "teegate/" in path and entry not in path}:
            inclusive[name] += count
    requests = max(1, load.requests)
    per_request_us = (load.loop_cpu_s + load.helper_cpu_s) / requests * 1e6
    loop_us = load.loop_cpu_s / requests * 1e6
    total = max(1, total)

    def rows(counter: Counter[str]) -> list[tuple[str, float, float]]:
        return [
            (name, 100 * n / total, loop_us * n / total) for name, n in counter.most_common(top)
        ]

    return Profile(
        samples=total,
        requests=load.requests,
        rps=load.rps,
        cpu_per_request_us=per_request_us,
        loop_cpu_per_request_us=loop_us,
        cpu_share=(load.loop_cpu_s + load.helper_cpu_s) / load.wall_s if load.wall_s else 0.0,
        helper_threads=load.helper_threads,
        by_area=rows(areas),
        top_self=rows(selfs),
        top_teegate=rows(inclusive),
        raw_path=str(raw),
    )


def profile_teegate(
    py_spy: Path,
    wrk: str,
    url: str,
    body: bytes,
    *,
    pid: int,
    auth: str,
    connections: int,
    duration_s: float,
) -> Profile:
    """wrk at `connections` for `duration_s` while py-spy samples the server (non-blocking)."""
    raw = WORK / "profile-teegate.txt"
    raw.unlink(missing_ok=True)
    spy = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(HARNESS_CPU),
            str(py_spy),
            "record",
            "--nonblocking",
            "--rate",
            "250",
            "--duration",
            str(max(1, round(duration_s - 1))),
            "--format",
            "raw",
            "--output",
            str(raw),
            "--pid",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    before, started = thread_cpu_s(pid), time.monotonic()
    result = run_wrk(wrk, url, body, connections=connections, duration_s=duration_s, auth=auth)
    after, wall = thread_cpu_s(pid), time.monotonic() - started
    used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    load = Load(
        requests=result.requests,
        rps=result.rps,
        wall_s=wall,
        loop_cpu_s=used.get(pid, 0.0),
        helper_cpu_s=sum(cpu for tid, cpu in used.items() if tid != pid),
        helper_threads=sum(1 for tid, cpu in used.items() if tid != pid and cpu > 0),
    )
    try:
        _, err = spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if not raw.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
    return summarise(raw, load)


def thread_cpu_s(pid: int) -> dict[int, float]:
    """utime + stime of each thread of `pid` (threads that ended meanwhile are not counted)."""
    found: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(tid)] = (int(fields[11]) + int(fields[12])) / procs.CLK_TCK
    return found
