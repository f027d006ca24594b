"""Turns results.json into docs/performance.md (tables) and performance.png (plot)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import log

BARE = "bare proxy"
LITELLM = "LiteLLM"
PORTKEY = "Portkey"
NGINX = "nginx (upstream alone)"
SQLITE = "teegate (sqlite)"
POSTGRES = "teegate (postgres)"
UPSTREAM = "upstream alone"
QUICK_NOTE = " (**--quick**: a short smoke run, figures indicative only)"
PLOT_SCRIPT = Path(__file__).with_name("plot.py")


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _row(results: dict[str, Any], label: str, c: int) -> dict[str, Any] | None:
    target = results["nonstream"].get(label)
    if not target:
        return None
    return next((r for r in target["rows"] if r["connections"] == c), None)


def _get(results: dict[str, Any], label: str, c: int, key: str) -> float | None:
    row = _row(results, label, c)
    return None if row is None else float(row[key])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _interleaved(results: dict[str, Any], label: str, c: int, key: str) -> float | None:
    """The median over the interleaved rounds; the sequential run's figure if there were none."""
    rounds = results.get("interleaved", {}).get(label, {}).get(str(c))
    if not rounds:
        return _get(results, label, c, key)
    return float(statistics.median(r[key] for r in rounds))


def _stream(results: dict[str, Any], kind: str, label: str, key: str) -> float | None:
    entry = results["streams"][kind].get(label)
    return None if entry is None else float(entry[key])


def _goal_rows(results: dict[str, Any]) -> list[list[str]]:
    """[what, target, teegate, met?, the bare proxy's own figure where one exists]."""

    def check(value: float | None, ok: Callable[[float], bool]) -> str:
        if value is None or math.isnan(value):
            return "not measured"
        return "met" if ok(value) else "**not met**"

    def added(label: str, key: str) -> float | None:
        return _diff(
            _stream(results, "latency", label, key), _stream(results, "latency", UPSTREAM, key)
        )

    sqlite32 = _interleaved(results, SQLITE, 32, "rps")
    vs_bare = _ratio(sqlite32, _interleaved(results, BARE, 32, "rps"))
    sequential32 = _get(results, SQLITE, 32, "rps")  # LiteLLM ran only in sequence
    vs_litellm = _ratio(sequential32, _get(results, LITELLM, 32, "rps"))
    bare_vs_litellm = _ratio(_get(results, BARE, 32, "rps"), _get(results, LITELLM, 32, "rps"))
    p50_add = _diff(
        _interleaved(results, SQLITE, 1, "p50_ms"), _interleaved(results, BARE, 1, "p50_ms")
    )
    p99_add = _diff(
        _interleaved(results, SQLITE, 1, "p99_ms"), _interleaved(results, BARE, 1, "p99_ms")
    )
    ttft_add, bare_ttft = added(SQLITE, "ttft_p50_ms"), added(BARE, "ttft_p50_ms")
    gap_add, bare_gap = added(SQLITE, "gap_p50_ms"), added(BARE, "gap_p50_ms")
    rss = _stream(results, "hold", SQLITE, "rss_per_stream_kb")
    cpu = _stream(results, "hold", SQLITE, "cpu_per_chunk_us")
    bare_rss = _stream(results, "hold", BARE, "rss_per_stream_kb")
    bare_cpu = _stream(results, "hold", BARE, "cpu_per_chunk_us")
    pg = _ratio(_interleaved(results, POSTGRES, 32, "rps"), sqlite32)
    return [
        [
            "c=32 throughput vs bare proxy",
            "≥ 0.6x",
            f"{_fmt(vs_bare)}x",
            check(vs_bare, lambda v: v >= 0.6),
            "1x",
        ],
        [
            "c=32 throughput vs LiteLLM",
            "≥ 25x",
            f"{_fmt(vs_litellm, 1)}x",
            check(vs_litellm, lambda v: v >= 25),
            f"{_fmt(bare_vs_litellm, 1)}x",
        ],
        [
            "c=1 p50 added over bare proxy",
            "≤ 0.3 ms",
            f"{_fmt(p50_add)} ms",
            check(p50_add, lambda v: v <= 0.3),
            "0 ms",
        ],
        [
            "c=1 p99 added over bare proxy",
            "≤ 1 ms",
            f"{_fmt(p99_add)} ms",
            check(p99_add, lambda v: v <= 1),
            "0 ms",
        ],
        [
            "stream TTFT p50 added over upstream",
            "≤ 1 ms",
            f"{_fmt(ttft_add)} ms",
            check(ttft_add, lambda v: v <= 1),
            f"{_fmt(bare_ttft)} ms",
        ],
        [
            "stream TTFT p50 added over bare proxy",
            "≤ 0.3 ms",
            f"{_fmt(_diff(ttft_add, bare_ttft))} ms",
            check(_diff(ttft_add, bare_ttft), lambda v: v <= 0.3),
            "0 ms",
        ],
        [
            "inter-chunk gap p50 added over upstream",
            "≤ 0.1 ms",
            f"{_fmt(gap_add, 3)} ms",
            check(gap_add, lambda v: v <= 0.1),
            f"{_fmt(bare_gap, 3)} ms",
        ],
        [
            "RSS per open stream",
            "≤ 40 KB",
            f"{_fmt(rss, 1)} KiB",
            check(rss, lambda v: v * 1.024 <= 40),
            f"{_fmt(bare_rss, 1)} KiB",
        ],
        [
            "CPU per relayed chunk",
            "≤ 20 µs",
            f"{_fmt(cpu, 1)} µs",
            check(cpu, lambda v: v <= 20),
            f"{_fmt(bare_cpu, 1)} µs",
        ],
        [
            "CPU per relayed chunk over bare proxy",
            "≤ 3 µs",
            f"{_fmt(_diff(cpu, bare_cpu), 1)} µs",
            check(_diff(cpu, bare_cpu), lambda v: v <= 3),
            "0 µs",
        ],
        [
            "PostgreSQL vs SQLite (c=32 throughput)",
            "≥ 0.7x",
            f"{_fmt(pg)}x",
            check(pg, lambda v: v >= 0.7),
            "-",
        ],
    ]


def _floor_note(results: dict[str, Any]) -> list[str]:
    """Name the targets the bare proxy misses too: there the stack, not teegate, sets the
    figure, and what teegate answers for is its distance from the floor."""
    rss_teegate = _stream(results, "hold", SQLITE, "rss_per_stream_kb")
    rss_bare = _stream(results, "hold", BARE, "rss_per_stream_kb")
    cpu_teegate = _stream(results, "hold", SQLITE, "cpu_per_chunk_us")
    cpu_bare = _stream(results, "hold", BARE, "cpu_per_chunk_us")
    upstream_ttft = _stream(results, "latency", UPSTREAM, "ttft_p50_ms")
    ttft_teegate = _diff(_stream(results, "latency", SQLITE, "ttft_p50_ms"), upstream_ttft)
    ttft_bare = _diff(_stream(results, "latency", BARE, "ttft_p50_ms"), upstream_ttft)
    missed = []
    if ttft_bare is not None and ttft_teegate is not None and ttft_bare > 1:
        missed.append(
            f"stream TTFT added ({_fmt(ttft_bare)} ms; teegate "
            f"{_fmt(ttft_teegate - ttft_bare)} ms from it)"
        )
    if rss_bare is not None and rss_teegate is not None and rss_bare * 1.024 > 40:
        missed.append(
            f"RSS per open stream ({_fmt(rss_bare, 1)} KiB; teegate "
            f"{_fmt(rss_teegate - rss_bare, 1)} KiB from it)"
        )
    if cpu_bare is not None and cpu_teegate is not None and cpu_bare > 20:
        missed.append(
            f"CPU per relayed chunk ({_fmt(cpu_bare, 1)} µs; teegate "
            f"{_fmt(cpu_teegate - cpu_bare, 1)} µs from it)"
        )
    if not missed:
        return []
    return [
        "The bare proxy misses these targets itself: " + "; ".join(missed) + ". There the "
        "floor of this stack (Python, uvloop, aiohttp, TLS to the upstream) on this machine "
        "is past the target, and teegate's own part is its distance from the floor.",
        "",
    ]


def _interleaved_section(results: dict[str, Any]) -> list[str]:
    rounds = results.get("interleaved")
    if not rounds:
        return []
    rows = []
    for c in (1, 32):
        for label, by_c in rounds.items():
            runs = by_c.get(str(c), [])
            if runs:
                rows.append(
                    [
                        label,
                        str(c),
                        ", ".join(_fmt(r["rps"], 0) for r in runs),
                        _fmt(_interleaved(results, label, c, "rps"), 0),
                        _fmt(
                            _ratio(
                                _interleaved(results, label, c, "rps"),
                                _interleaved(results, BARE, c, "rps"),
                            )
                        )
                        + "x",
                        _fmt(_interleaved(results, label, c, "p50_ms")),
                        _fmt(_interleaved(results, label, c, "p99_ms")),
                        str(sum(r["errors"] for r in runs)),
                    ]
                )
    return [
        "## Side by side: the target points, interleaved",
        "",
        "This machine's speed drifts by tens of percent within a minute (other tenants of the "
        "host), so two targets measured minutes apart differ by the drift as well. Here the "
        "bare proxy, teegate (each store) and Portkey (when run) are all up at once and take "
        "turns under wrk, round "
        "after round, at the two concurrencies the targets name; the targets above use each "
        "one's median over the rounds.",
        "",
        *_table(
            [
                "target",
                "c",
                "req/s per round",
                "median req/s",
                "median / bare",
                "median p50 ms",
                "median p99 ms",
                "errors",
            ],
            rows,
        ),
    ]


def _embeddings_section(results: dict[str, Any]) -> list[str]:
    runs = results.get("embeddings")
    if not runs or BARE not in runs or SQLITE not in runs:
        return ["Not measured in this run.", ""]

    def get(label: str, c: int, key: str) -> float | None:
        return next((r[key] for r in runs[label] if r["connections"] == c), None)

    rows = []
    for c in sorted({r["connections"] for r in runs[BARE]}):
        bare_rps, teegate_rps = get(BARE, c, "rps"), get(SQLITE, c, "rps")
        rows.append(
            [
                str(c),
                _fmt(bare_rps, 0),
                _fmt(teegate_rps, 0),
                f"{_fmt(_ratio(teegate_rps, bare_rps))}x",
                _fmt(get(BARE, c, "p50_ms")),
                _fmt(get(SQLITE, c, "p50_ms")),
                _fmt(_diff(get(SQLITE, c, "p50_ms"), get(BARE, c, "p50_ms"))),
                _fmt(_diff(get(SQLITE, c, "p99_ms"), get(BARE, c, "p99_ms"))),
            ]
        )
    header = [
        "c",
        "bare req/s",
        "teegate req/s",
        "teegate / bare",
        "bare p50 (ms)",
        "teegate p50 (ms)",
        "added p50 (ms)",
        "added p99 (ms)",
    ]
    return _table(header, rows)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _nonstream_tables(results: dict[str, Any]) -> list[str]:
    labels = [
        label
        for label in (NGINX, BARE, LITELLM, PORTKEY, SQLITE, POSTGRES)
        if label in results["nonstream"]
    ]
    concurrencies = sorted(
        {r["connections"] for t in results["nonstream"].values() for r in t["rows"]}
    )
    lines: list[str] = []

    def err(label: str, c: int) -> str:
        n = _get(results, label, c, "errors")
        return f" ({n:.0f} errors)" if n else ""

    header = ["c", *labels, "teegate / bare", "teegate / LiteLLM", "teegate / Portkey"]
    rows = []
    for c in concurrencies:
        sqlite = _get(results, SQLITE, c, "rps")
        rows.append(
            [
                str(c),
                *(_fmt(_get(results, label, c, "rps"), 0) + err(label, c) for label in labels),
                f"{_fmt(_ratio(sqlite, _get(results, BARE, c, 'rps')))}x",
                f"{_fmt(_ratio(sqlite, _get(results, LITELLM, c, 'rps')), 1)}x",
                f"{_fmt(_ratio(sqlite, _get(results, PORTKEY, c, 'rps')), 1)}x",
            ]
        )
    lines += ["**Throughput (req/s)**", "", *_table(header, rows)]
    for key, name in (("p50_ms", "p50"), ("p99_ms", "p99")):
        header = ["c", *labels, "teegate - bare"]
        rows = [
            [
                str(c),
                *(_fmt(_get(results, label, c, key)) for label in labels),
                _fmt(_diff(_get(results, SQLITE, c, key), _get(results, BARE, c, key))),
            ]
            for c in concurrencies
        ]
        lines += [f"**Latency {name} (ms)**", "", *_table(header, rows)]
    return lines


def _stream_tables(results: dict[str, Any]) -> list[str]:
    cfg = results["streams"].get("config", {})
    latency = results["streams"]["latency"]
    base = latency.get(UPSTREAM)
    lines = [
        f"Paced upstream: the devstack, {cfg.get('chunks', '?')} chunks per stream, "
        f"{cfg.get('latency_pace_ms', '?')} ms apart; {cfg.get('latency_streams', '?')} "
        "streams one at a time per target. TTFT = request sent → first chunk with content; "
        "gap = time between consecutive chunks at the client; headers = request sent → response "
        "headers (what a proxy does before it relays anything). *Added* = target - upstream alone.",
        "",
    ]
    rows = []
    for label, s in latency.items():
        is_base = base is None or label == UPSTREAM

        def added(key: str, s: dict[str, Any] = s, is_base: bool = is_base) -> str:
            return "-" if is_base or base is None else _fmt(s[key] - base[key], 3)

        rows.append(
            [
                label,
                _fmt(s.get("headers_p50_ms")),
                _fmt(s["ttft_p50_ms"]),
                _fmt(s["ttft_p99_ms"]),
                added("ttft_p50_ms"),
                _fmt(s["gap_p50_ms"], 3),
                _fmt(s["gap_p99_ms"], 3),
                added("gap_p50_ms"),
                added("gap_p99_ms"),
                f"{s['streams']} / {s['errors']}",
            ]
        )
    lines += _table(
        [
            "",
            "headers p50 ms",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "TTFT p50 added",
            "gap p50 ms",
            "gap p99 ms",
            "gap p50 added",
            "gap p99 added",
            "streams / errors",
        ],
        rows,
    )
    hold = results["streams"]["hold"]
    lines += [
        f"{cfg.get('hold_streams', '?')} concurrent streams in one worker "
        f"(upstream paced {cfg.get('hold_pace_ms', '?')} ms per chunk). Once every stream has "
        f"its first chunk, RSS (VmRSS) and CPU (utime + stime of the proxy process) are "
        f"measured over {cfg.get('hold_window_s', '?')} s. RSS per stream = (peak RSS - RSS "
        "after warm-up) / open streams; CPU per chunk = CPU time / chunks the clients received "
        "in the window.",
        "",
    ]
    rows = [
        [
            label,
            f"{h['opened']} / {h['target_streams']}",
            _fmt(h["open_s"], 1),
            _fmt(h["rss_idle_mb"], 1),
            _fmt(h["rss_open_mb"], 1),
            _fmt(h["rss_per_stream_kb"], 1),
            _fmt(h["chunks_per_s"], 0),
            _fmt(h["cpu_per_chunk_us"], 1),
            f"{100 * h['cpu_share']:.0f}%",
        ]
        for label, h in hold.items()
    ]
    lines += _table(
        [
            "",
            "open / asked",
            "open took s",
            "RSS idle MiB",
            "RSS open MiB",
            "KiB per stream",
            "chunks/s",
            "µs CPU per chunk",
            "CPU use",
        ],
        rows,
    )
    partial = [label for label, h in hold.items() if h["opened"] < h["target_streams"]]
    if partial:
        lines += [
            f"{', '.join(partial)}: not every stream was open within the bound "
            f"({_fmt(max(hold[p]['open_s'] for p in partial), 0)} s), so its window ran while it "
            "was still opening streams, with its core full: its per-chunk CPU includes that work.",
            "",
        ]
    return lines


def _scale_section(results: dict[str, Any]) -> list[str]:
    """The open-stream scale phase (`bench/open_streams.py`): per count, every target
    that held up, against the bare proxy at the same count."""
    scale = results.get("scale")
    if not scale:
        return ["Not measured in this run (`bench/run --streams-scale 1000,5000,10000`).", ""]
    cfg, points = scale["config"], scale["points"]
    lines = [
        f"One worker per target holding N streams at once; the upstream (the devstack, CPU 1, "
        f"shared with the load generator) paces one chunk every {_fmt(cfg['pace_ms'], 0)} ms, "
        f"{cfg['chunks']} chunks per stream, far longer than the measurement. The load "
        "generator (asyncio + aiohttp on uvloop, no connection limit) opens 256 at a time "
        "until each has its first chunk (*open took*), waits 3 s, then measures over "
        f"{_fmt(cfg['window_s'], 0)} s: the gaps between chunks at the client (the 1 s pace "
        "plus what the proxy adds: *added* = target - bare proxy at the same N), the "
        "proxy's RSS per open stream (peak RSS - RSS before / open streams), its CPU "
        "(utime + stime) per chunk the clients received, and its open fds; then the client "
        "closes every stream. Errors = streams that did not open + open streams that broke. "
        f"Open-file limit raised to {cfg.get('nofile') or '?'} for every process. For "
        "teegate, *holds* = holds still open once the streams closed (after up to 60 s) and "
        "whether the ledger's invariants hold.",
        "",
    ]
    rows = []
    for n in cfg["counts"]:
        bare = points.get(BARE, {}).get(str(n))
        for label, by_n in points.items():
            h = by_n.get(str(n))
            if h is None:
                continue

            def vs_bare(
                key: str, h: dict[str, Any] = h, bare: Any = bare, label: str = label
            ) -> str:
                if bare is None or label == BARE:
                    return "-"
                return _fmt(h[key] - bare[key])

            rss_ratio = (
                None
                if bare is None or label == BARE
                else _ratio(h["rss_per_stream_kb"], bare["rss_per_stream_kb"])
            )
            books = h.get("books")
            rows.append(
                [
                    f"{n:,}",
                    label,
                    f"{h['opened']:,} / {h['errors']:,}",
                    _fmt(h["open_s"], 1),
                    _fmt(h["gap_p50_ms"], 1),
                    _fmt(h["gap_p99_ms"], 1),
                    vs_bare("gap_p50_ms"),
                    vs_bare("gap_p99_ms"),
                    _fmt(h["rss_per_stream_kb"], 1),
                    "-" if rss_ratio is None else f"{_fmt(rss_ratio)}x",
                    _fmt(h["cpu_per_chunk_us"], 1),
                    vs_bare("cpu_per_chunk_us"),
                    f"{100 * h['cpu_share']:.0f}%",
                    f"{h['fds_open']:,}",
                    f"{100 * h['upstream_cpu_share']:.0f}% / {100 * h['loadgen_cpu_share']:.0f}%",
                    "-"
                    if books is None
                    else f"{books['open_holds']} open, "
                    + ("exact" if books["exact"] else f"**not exact**: {books['problem']}"),
                ]
            )
    lines += _table(
        [
            "N",
            "target",
            "opened / errors",
            "open took s",
            "gap p50 ms",
            "gap p99 ms",
            "added p50",
            "added p99",
            "KiB RSS / stream",
            "vs bare",
            "µs CPU / chunk",
            "added",
            "CPU use",
            "fds",
            "upstream / load CPU",
            "holds, books",
        ],
        rows,
    )
    errors = [
        f"{label} at {int(n):,}: {h['first_error']}"
        for label, by_n in points.items()
        for n, h in by_n.items()
        if h.get("first_error")
    ]
    if errors:
        lines += ["First error per point: " + "; ".join(errors) + ".", ""]
    lines += _scale_targets(cfg, points)
    return lines


def _scale_targets(cfg: dict[str, Any], points: dict[str, Any]) -> list[str]:
    """Issue 19's targets for teegate at the largest count both it and the bare proxy ran."""
    rows = []
    for label in (SQLITE, POSTGRES):
        common = [n for n in cfg["counts"] if str(n) in points.get(label, {})]
        common = [n for n in common if str(n) in points.get(BARE, {})]
        if not common:
            continue
        n = max(common)
        t, b = points[label][str(n)], points[BARE][str(n)]
        p99 = t["gap_p99_ms"] - b["gap_p99_ms"]
        rss = _ratio(t["rss_per_stream_kb"], b["rss_per_stream_kb"])
        books = t.get("books") or {}

        def met(ok: bool) -> str:
            return "met" if ok else "**not met**"

        rows += [
            [label, f"{n:,} streams, zero errors", f"{t['errors']} errors", met(t["errors"] == 0)],
            [label, "gap p99 added ≤ 5 ms over bare", f"{_fmt(p99)} ms", met(p99 <= 5)],
            [
                label,
                "RSS per stream ≤ 1.2x bare",
                f"{_fmt(rss)}x",
                met(rss is not None and rss <= 1.2),
            ],
            [
                label,
                "every hold settled after",
                f"{books.get('open_holds', '?')} open",
                met(books.get("open_holds") == 0 and bool(books.get("exact"))),
            ],
        ]
    if not rows:
        return []
    return ["Targets (at the largest count run):", "", *_table(["", "target", "", ""], rows)]


def _workers_section(results: dict[str, Any]) -> list[str]:
    workers = results.get("workers")
    if not workers:
        return ["Not measured in this run (`bench/run --workers2`).", ""]
    lines = [
        "teegate `--workers 2` (both cores, so the second worker shares CPU 1 with nginx, the "
        "devstack and wrk; the Redis limiter, as more than one process requires) against one "
        "worker on CPU 0 (local limiter, and the Redis limiter to separate its cost), all up "
        "at once and interleaved like the target points above. Books = after the phase, "
        "every hold settled and the ledger's invariants hold.",
        "",
    ]
    rows = []
    for store, entry in workers["stores"].items():
        rounds = entry["interleaved"]
        fake = {"interleaved": rounds, "nonstream": {}}
        one = _interleaved(fake, "1 worker", 32, "rps")
        for label in rounds:
            rps32 = _interleaved(fake, label, 32, "rps")
            rows.append(
                [
                    store,
                    label,
                    _fmt(rps32, 0),
                    f"{_fmt(_ratio(rps32, one))}x",
                    _fmt(_interleaved(fake, label, 32, "p99_ms")),
                    _fmt(_interleaved(fake, label, 1, "p50_ms")),
                    _fmt(_interleaved(fake, label, 1, "p99_ms")),
                    str(sum(r["errors"] for runs in rounds[label].values() for r in runs)),
                ]
            )
        books = entry["books"]
        rows.append(
            [
                store,
                "books",
                f"{books['holds']:,} holds",
                f"{books['open_holds']} open",
                "exact" if books["exact"] else f"**not exact**: {books['problem']}",
                "",
                "",
                "",
            ]
        )
    lines += _table(
        [
            "store",
            "teegate",
            "c=32 median req/s",
            "vs 1 worker (target ≥ 1.6x)",
            "c=32 p99 ms",
            "c=1 p50 ms",
            "c=1 p99 ms",
            "errors",
        ],
        rows,
    )
    return lines


def _store_table(results: dict[str, Any]) -> list[str]:
    if POSTGRES not in results["nonstream"]:
        return ["PostgreSQL was not run.", ""]
    rows = []
    for r in results["nonstream"][SQLITE]["rows"]:
        c = r["connections"]
        pg = _row(results, POSTGRES, c)
        if pg is None:
            continue
        rows.append(
            [
                str(c),
                _fmt(r["rps"], 0),
                _fmt(pg["rps"], 0),
                f"{_fmt(_ratio(pg['rps'], r['rps']))}x",
                _fmt(r["p50_ms"]),
                _fmt(pg["p50_ms"]),
                _fmt(r["p99_ms"]),
                _fmt(pg["p99_ms"]),
            ]
        )
    return _table(
        [
            "c",
            "SQLite req/s",
            "PostgreSQL req/s",
            "PG / SQLite",
            "SQLite p50 ms",
            "PG p50 ms",
            "SQLite p99 ms",
            "PG p99 ms",
        ],
        rows,
    )


def _profile_section(results: dict[str, Any]) -> list[str]:
    prof = results.get("profile")
    if not prof:
        return ["No profile in this run.", ""]
    lines = [
        f"teegate (SQLite) under wrk c=32 while py-spy samples it (non-blocking, 250 Hz): "
        f"{_fmt(prof['rps'], 0)} req/s, **{_fmt(prof['cpu_per_request_us'], 0)} µs of CPU per "
        f"request** (utime + stime / requests): {_fmt(prof['loop_cpu_per_request_us'], 0)} µs "
        f"on the event-loop thread, the rest on {prof['helper_threads']} helper thread(s) "
        "(aiosqlite runs each read connection on a thread of its own; the SQLite ledger's "
        "WAL checkpointer has one too). The process used "
        f"{100 * prof['cpu_share']:.0f}% of its core: below 100% means requests wait (on the "
        "store, on thread hand-offs) rather than on CPU.",
        "",
        f"The tables fold the event-loop thread's {prof['samples']} samples; µs per request = "
        "its CPU per request times the share of samples. Raw collapsed stacks (all threads): "
        "`bench/.work/profile-teegate.txt`, readable by speedscope or flamegraph.pl.",
        "",
        "By the package of the innermost Python frame (self time):",
        "",
    ]
    lines += _table(
        ["package", "% of samples", "µs / request"],
        [[a, _fmt(p, 1), _fmt(us, 1)] for a, p, us in prof["by_area"]],
    )
    lines += ["teegate functions by inclusive time:", ""]
    lines += _table(
        ["function", "% of samples", "µs / request"],
        [[f"`{f}`", _fmt(p, 1), _fmt(us, 1)] for f, p, us in prof["top_teegate"]],
    )
    lines += ["Hottest functions by self time:", ""]
    lines += _table(
        ["function", "% of samples", "µs / request"],
        [[f"`{f}`", _fmt(p, 1), _fmt(us, 1)] for f, p, us in prof["top_self"]],
    )
    return lines


def _transport(meta: dict[str, Any]) -> str:
    """Results from before the bench served TLS have no `upstream_tls`: plain HTTP."""
    return "TLS" if meta.get("upstream_tls") else "plain HTTP"


def _attestation_note(meta: dict[str, Any]) -> str:
    """What the mode in the header meant in this run, so figures from runs in different
    modes are never compared unawares."""
    if not meta.get("upstream_tls"):
        return (
            "every target reached the upstream over plain HTTP; teegate trusted the "
            "catalog's `confidential_compute` flag (no evidence checked)."
        )
    shared = (
        "every target reaches the upstream over TLS, to a devstack enclave's self-signed "
        "certificate (nginx serves that certificate and key in the non-stream runs); the bare "
        "proxy, LiteLLM and Portkey verify it as their CA file. "
    )
    if meta["attestation"] == "attested-tls":
        return shared + (
            "teegate fetches the enclave's TDX quote (`/v1/attestation/report`, fresh nonce) "
            "before serving, verifies it with dcap-qvl against the devstack's dev root CA (a "
            "test PKI, so verdicts say `simulated`) with collateral and GPU verdicts from "
            "the devstack's PCS and NRAS stand-ins, checks that report_data binds that "
            "certificate's key, and pins every inference connection to the certificate."
        )
    return shared + (
        "teegate checks no evidence: it trusts the catalog's `confidential_compute` flag, "
        "over TLS verified with the same certificate as CA file."
    )


DESIGN_NOTES = """\
## Design notes

Tuning choices the code keeps, and the measurements behind them (on the bench machine;
the commits that made them tell the rest).

- The SQLite ledger runs each batch inline on the event loop: its SQL takes tens of µs,
  while handing it to a thread and back costs two wake-ups, ~0.6 ms on a VM.
- The checkpointer makes the first commit after the WAL starts over itself: that commit
  syncs the new WAL header, an fsync of ~0.5 ms that would otherwise land on the next
  request's hold.
- WAL checkpoints run once a second (`CHECKPOINT_INTERVAL_S`). Every 0.1 s was tried, for
  shorter checkpoints: no better tail latency was measured, for ten times the fsyncs.
- Between checkpoints the checkpointer starts the WAL's writeback every 0.1 s
  (`WAL_WRITEBACK_INTERVAL_S`, no waiting). Without it, a checkpoint's fsync flushed a
  second of commits at once (~35 MB, one request at a time), keeping the kernel busy on
  the event loop's core for tens of ms; with it, c=1 p99 went 2.18 → 1.74 ms (interleaved
  runs, a0d1f32).
- Request ids are a random per-process prefix and a counter: `os.urandom` per request
  costs ~9 µs.
"""
"""Tuning choices in the code and the runs behind them: not measured by this run, but
kept with the figures (the code's comments say why, these say how much)."""


def render(results: dict[str, Any], plot_name: str | None) -> str:
    meta = results["meta"]
    plan = meta["plan"]
    lines = [
        "# Performance",
        "",
        "teegate against the floor (a bare Python passthrough proxy) and against what users "
        "would otherwise pick (LiteLLM proxy, Portkey's AI Gateway), in one run on one machine, "
        "same upstream. "
        "Reproduce with `bench/run` (setup included; `bench/README.md`). Figures are one run's; "
        "the targets are reported, never asserted.",
        "",
        f"- Run: {meta['date']}{QUICK_NOTE if meta['quick'] else ''}, "
        f"{_fmt(meta.get('wall_s'), 0)} s wall",
        f"- Machine: {meta['cores']} cores ({meta['cpu']}), Linux {meta['kernel']}, "
        f"Python {meta['python']}",
        f"- CPU used by other processes during the run: "
        f"{_fmt(100 * meta.get('other_cpu_share', math.nan), 0)}% of the machine "
        f"(hypervisor steal {_fmt(100 * meta.get('steal_share', math.nan), 0)}%)",
        f"- teegate {meta['teegate_commit']}, attestation mode `{meta['attestation']}`; "
        f"LiteLLM {meta['litellm'] or 'not run'}; Portkey {meta.get('portkey') or 'not run'}; "
        f"nginx {meta['nginx']}; {meta['wrk']}",
        f"- Upstream and attestation: {_attestation_note(meta)}",
        "",
    ]
    if results.get("notes"):
        lines += [f"> {note}" for note in results["notes"]] + [""]
    if plot_name:
        lines += [f"![teegate vs bare proxy vs LiteLLM vs Portkey]({plot_name})", ""]
    lines += [
        "## Targets",
        "",
        *_table(["", "target", "teegate", "", "bare proxy (the floor)"], _goal_rows(results)),
        *_floor_note(results),
        *_interleaved_section(results),
    ]
    lines += [
        "## Non-stream chat completions",
        "",
        f"wrk, closed loop, 1 thread, c connections, {plan['warmup_s']:.0f} s warm-up then "
        f"{plan['duration_s']:.0f} s measured per point; upstream = nginx answering a fixed "
        f"`chat.completion` with usage, over {_transport(meta)}. Errors = socket errors, "
        "timeouts and non-2xx answers.",
        "",
        *_nonstream_tables(results),
        "## Embeddings",
        "",
        "`POST /v1/embeddings`, 8 inputs, `encoding_format` base64 (as the SDKs ask), the "
        "bare proxy and teegate (SQLite) up side by side, same wrk settings; upstream = nginx "
        "answering fixed 1024-dimension embeddings with usage (44 KB). teegate adds the "
        "modality switch, the gate, the hold on the inputs' token bound and the settle.",
        "",
        *_embeddings_section(results),
        "## Streams",
        "",
        *_stream_tables(results),
        "## Open-stream scale",
        "",
        *_scale_section(results),
        "## Both cores: 2 workers against 1",
        "",
        *_workers_section(results),
        "## Store: SQLite vs PostgreSQL",
        "",
        "The same non-stream runs, teegate on SQLite (WAL, file under bench/.work) and on "
        "PostgreSQL (127.0.0.1:5432, database `teegate_bench`, recreated each run).",
        "",
        *_store_table(results),
        "## Profile: teegate's hot path",
        "",
        *_profile_section(results),
        "## Method",
        "",
        "- One worker per proxy, pinned with taskset to CPU 0 alone; nginx, the devstack, wrk "
        "and the stream load generator share CPU 1. PostgreSQL is a system service on both "
        "cores.",
        "- teegate runs as `teegate serve --config <generated TOML>` with every feature that is "
        "wired on: API-key auth, per-key rate limit (local), the gate (catalog + attestation "
        "verdict, mode above), the billing hold before and the settle after the upstream "
        "call, the usage record, access logs (to a file) and metrics. One account with "
        "1,000,000 USD of credit, one key with rpm 100,000,000.",
        "- bare proxy: `bench/bare_proxy.py`, Starlette + uvicorn (uvloop, httptools) + one "
        "aiohttp session forwarding the body and relaying the answer byte for byte. No "
        "auth, no parsing.",
        "- LiteLLM: `litellm --config` in its own venv, one model, a master key (it refuses to "
        "start without one), no database, one worker.",
        "- Portkey: `@portkey-ai/gateway` (Node) from npm in its own prefix, its own "
        "launcher (one process); every request carries `x-portkey-provider: openai` and "
        "`x-portkey-custom-host: <upstream>/v1`, and Node trusts the enclave's certificate "
        "through `NODE_EXTRA_CA_CERTS`.",
        "- Every request body: one user message, `max_tokens` 1024, same model id everywhere.",
        "- Streams: `bench/streams.py` (asyncio + aiohttp on uvloop). The 2,000-stream window "
        "starts once every stream has its first chunk; the streams are then closed by the "
        "client.",
        "",
        *DESIGN_NOTES.splitlines(),
    ]
    return "\n".join(lines) + "\n"


KEPT_MARKER = "<!-- bench/run keeps what follows: micro-benchmarks of their own -->"
"""Sections from `bench.e2ee` and `bench.receipts` (separate runs) below this line of
performance.md survive a rewrite by `bench/run`."""


def write(results: dict[str, Any], out: Path, tools_python: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plot_name: str | None = "performance.png"
    png = out / "performance.png"
    if tools_python is None:
        plot_name = None
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tmp:
            json.dump(results, tmp)
        done = subprocess.run(
            [str(tools_python), str(PLOT_SCRIPT), tmp.name, str(png)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        Path(tmp.name).unlink(missing_ok=True)
        if done.returncode != 0:
            log(f"plot failed: {done.stderr[-1000:]}")
            plot_name = None
    report = out / "performance.md"
    kept = report.read_text().partition(KEPT_MARKER) if report.exists() else ("", "", "")
    text = render(results, plot_name)
    report.write_text(text.rstrip("\n") + "\n\n" + kept[1] + kept[2] if kept[1] else text)
