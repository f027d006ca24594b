"""Non-stream load with wrk: closed loop, c connections on one thread, bounded in time."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import HARNESS_CPU, WORK

LUA = Path(__file__).with_name("wrk_post.lua")


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    """Connect/read/write errors, timeouts and non-2xx/3xx answers."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_wrk(
    wrk: str,
    url: str,
    body: bytes,
    *,
    connections: int,
    duration_s: float,
    auth: str = "",
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> WrkResult:
    body_file = WORK / "wrk-body.json"
    body_file.write_bytes(body)
    argv = [
        "taskset",
        "-c",
        str(HARNESS_CPU),
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={round(timeout_s)}s",
        "-s",
        str(LUA),
        url,
    ]
    extra = "".join(f"{name}: {value}\n" for name, value in (headers or {}).items())
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_AUTH": auth,
        "BENCH_HEADERS": extra,
    }
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=False, timeout=duration_s + 60
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    duration = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        connections=connections,
        requests=raw["requests"],
        duration_s=duration,
        rps=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        p999_ms=raw["p999_us"] / 1000,
        errors=errors,
    )
