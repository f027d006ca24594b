"""The bench, end to end: set up, run every server side by side, write the report.

    bench/run                 full run, writes docs/performance.md and docs/performance.png
    bench/run --quick         the CI smoke run (< 2 min), writes bench/.work/quick/
    bench/run --report-only   rewrite the report from the last results.json
    bench/run --streams-scale 1000,5000,10000   add the open-stream scale phase
    bench/run --workers2      add teegate --workers 2 (Redis limiter) against 1 worker
    bench/run --skip-main --streams-scale 1000  only that phase; the last run's other
                              sections are kept in results.json and the report

The proxy under test always runs alone on CPU 0 with one worker; nginx, the
devstack, wrk and the stream load generator share CPU 1. Every upstream is a
devstack enclave over TLS (nginx serving that enclave's certificate and key for
the non-stream runs); teegate attests it (attested-tls, the default) or trusts
its catalog (--attestation provider-asserted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import install, open_streams, procs, report, streams, targets
from bench.common import (
    HARNESS_CPU,
    LITELLM_VERSION,
    PORTKEY_VERSION,
    REPO,
    STREAM_COMPLETION_TOKENS,
    WORK,
    chat_body,
    embeddings_body,
    log,
)
from bench.profile import profile_teegate
from bench.wrk import run_wrk

ATTESTATION_MODES = ("attested-tls", "provider-asserted")


@dataclass(frozen=True)
class Plan:
    quick: bool
    concurrencies: tuple[int, ...]
    duration_s: float
    warmup_s: float
    latency_streams: int
    stream_pace_ms: float
    hold_streams: int
    hold_pace_ms: float
    hold_window_s: float
    hold_open_bound_s: float
    profile_s: float
    interleaved_rounds: int
    interleaved_s: float

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, (1, 32), 2, 1, 3, 5, 200, 250, 2, 10, 3, 1, 2)
        return cls(False, (1, 8, 32, 128), 10, 2, 20, 5, 2000, 250, 8, 60, 15, 5, 4)


@dataclass(frozen=True)
class Tools:
    nginx: str
    wrk: str
    litellm: Path | None
    portkey: Path | None
    """Portkey's start script (node), when installed."""
    tools_python: Path | None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short CI smoke run")
    parser.add_argument("--out", type=Path, help="folder for performance.md/.png")
    parser.add_argument(
        "--litellm",
        choices=("auto", "yes", "no"),
        default="auto",
        help="auto: full runs install it; --quick uses it only if installed",
    )
    parser.add_argument(
        "--portkey",
        choices=("auto", "yes", "no"),
        default="auto",
        help="Portkey's AI Gateway (npm): auto: full runs install it (when npm is there); "
        "--quick uses it only if installed",
    )
    parser.add_argument(
        "--attestation",
        choices=ATTESTATION_MODES,
        default="attested-tls",
        help="teegate's upstream attestation mode: attested-tls verifies the enclave's TDX "
        "quote and pins its TLS key; provider-asserted trusts the catalog over CA-verified "
        "TLS. The upstreams serve TLS either way.",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL runs")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the last results.json"
    )
    parser.add_argument(
        "--streams-scale",
        type=_counts,
        metavar="N,N,...",
        help="open-stream scale phase: one worker holding N paced streams (1 chunk/s) per "
        "target, e.g. 1000,5000,10000",
    )
    parser.add_argument(
        "--scale-window", type=float, default=20.0, help="seconds measured per scale point"
    )
    parser.add_argument(
        "--workers2",
        action="store_true",
        help="teegate --workers 2 (Redis limiter) against 1 worker at c=32, interleaved",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/13",
        help="the Redis teegate's limiter uses in the --workers2 phase",
    )
    parser.add_argument(
        "--skip-main",
        action="store_true",
        help="run only --streams-scale/--workers2; keep the last results.json's other sections",
    )
    args = parser.parse_args(argv)

    plan = Plan.for_mode(args.quick)
    out = args.out or (WORK / "quick" if args.quick else REPO / "docs")
    results_path = (WORK / "quick" if args.quick else WORK) / "results.json"
    if args.report_only:
        report.write(json.loads(results_path.read_text()), out, install.ensure_tools())
        return 0

    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so every server started gets stopped
    nofile = open_streams.raise_fd_limit()  # before any server starts: they inherit it
    started = time.monotonic()
    (busy0, steal0), own0 = procs.machine_cpu_s(), procs.own_cpu_s()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {HARNESS_CPU})
    WORK.mkdir(parents=True, exist_ok=True)
    tools = _setup(args)
    results: dict[str, Any] = {
        "meta": _meta(plan, tools, args.attestation),
        "notes": [],
        "nonstream": {},
        "streams": {"latency": {}, "hold": {}},
        "profile": None,
    }
    if tools.litellm is None:
        results["notes"].append(
            "LiteLLM skipped (--quick without an installed LiteLLM venv, or --litellm no)."
        )
    if tools.portkey is None:
        results["notes"].append(
            "Portkey skipped (--quick without an installed gateway, --portkey no, or no npm)."
        )
    use_postgres = not args.no_postgres and targets.postgres_available()
    if not use_postgres:
        results["notes"].append("PostgreSQL runs skipped (--no-postgres or not reachable).")

    stores = [targets.prepare_store("sqlite")]
    if use_postgres:
        stores.append(targets.prepare_store("postgres"))

    if args.skip_main:
        kept = json.loads(results_path.read_text()) if results_path.exists() else {}
        sections = ["nonstream", "streams", "profile", "interleaved", "embeddings"]
        sections += [] if args.streams_scale else ["scale"]
        sections += [] if args.workers2 else ["workers"]
        for section in sections:
            if section in kept:
                results[section] = kept[section]
        main_date = kept.get("meta", {}).get("main_date", "?")
        results["meta"]["main_date"] = main_date
        results["notes"].append(
            "This run measured only the phases asked for (--skip-main); the other sections "
            f"are kept from earlier runs (the main phases: {main_date})."
        )
    else:
        results["meta"]["main_date"] = results["meta"]["date"]
        _nonstream_phase(plan, tools, stores, args.attestation, results, not args.no_profile)
        _stream_phase(plan, tools, stores[0], args.attestation, results)
    if args.streams_scale:
        results["meta"]["nofile"] = nofile
        _scale_phase(tools, stores, args.attestation, args.streams_scale, args, results)
    if args.workers2:
        _workers_phase(plan, tools, stores, args.attestation, args.redis_url, results)

    wall = time.monotonic() - started
    (busy1, steal1), own1 = procs.machine_cpu_s(), procs.own_cpu_s()
    capacity = wall * (os.cpu_count() or 1)
    results["meta"]["wall_s"] = round(wall, 1)
    results["meta"]["other_cpu_share"] = round(max(0.0, busy1 - busy0 - own1 + own0) / capacity, 3)
    results["meta"]["steal_share"] = round((steal1 - steal0) / capacity, 3)
    if results["meta"]["steal_share"] > 0.02:
        results["notes"].append(
            f"The hypervisor stole {100 * results['meta']['steal_share']:.0f}% of the CPU time."
        )
    if results["meta"]["other_cpu_share"] > 0.05:
        results["notes"].append(
            f"Other processes (PostgreSQL's own work included) kept "
            f"{100 * results['meta']['other_cpu_share']:.0f}% of the machine's CPU busy during "
            "this run: figures are noisier than on an idle machine."
        )
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=2))
    report.write(results, out, tools.tools_python)
    log(f"done in {results['meta']['wall_s']:.0f} s: {out / 'performance.md'}")
    return 0


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of stream counts: {text!r}") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"not a list of stream counts: {text!r}")
    return counts


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _setup(args: argparse.Namespace) -> Tools:
    nginx, wrk = install.ensure_apt_packages()
    litellm: Path | None = None
    if args.litellm == "yes" or (args.litellm == "auto" and not args.quick):
        litellm = install.ensure_litellm()
    elif args.litellm == "auto" and install.litellm_venv_ready():
        litellm = WORK / "litellm-venv" / "bin" / "litellm"
    if litellm is None and args.litellm != "no":
        log("LiteLLM is not installed: --quick skips it (a full run installs it)")
    portkey: Path | None = None
    if args.portkey == "yes" or (args.portkey == "auto" and not args.quick):
        portkey = install.ensure_portkey()
        if portkey is None and args.portkey == "yes":
            raise SystemExit("bench: --portkey yes needs node and npm")
    elif args.portkey == "auto":
        portkey = install.portkey_ready()
    if portkey is None and args.portkey != "no":
        log("Portkey is not installed: --quick skips it (a full run installs it)")
    tools_python = install.ensure_tools()
    return Tools(nginx, wrk, litellm, portkey, tools_python)


# --- non-stream --------------------------------------------------------------------------


def _nonstream_phase(
    plan: Plan,
    tools: Tools,
    stores: list[targets.TeegateStore],
    attestation: str,
    results: dict[str, Any],
    profile: bool,
) -> None:
    body = chat_body(stream=False)
    with (
        _upstream(targets.devstack("evidence", chunk_delay_ms=0, completion_tokens=1)) as enclave,
        _upstream(targets.nginx(tools.nginx, enclave)) as upstream,
    ):
        label = "nginx (upstream alone)"
        _nonstream_target(plan, tools, label, upstream.server, "", body, results)
        with _server(targets.bare(upstream)) as server:
            _nonstream_target(plan, tools, "bare proxy", server, "", body, results)
        if tools.litellm is not None:
            with _server(targets.litellm(tools.litellm, upstream)) as server:
                _nonstream_target(
                    plan, tools, "LiteLLM", server, targets.LITELLM_MASTER_KEY, body, results
                )
        if tools.portkey is not None:
            with _server(targets.portkey(tools.portkey, upstream)) as server:
                _nonstream_target(
                    plan, tools, "Portkey", server, targets.PORTKEY_UPSTREAM_KEY, body, results
                )
        for store in stores:
            with _server(targets.teegate(store, upstream, attestation)) as server:
                label = f"teegate ({store.name})"
                _nonstream_target(plan, tools, label, server, store.key, body, results)
                if profile and store.name == "sqlite":
                    results["profile"] = _profile(plan, tools, server, store.key, body)
        with contextlib.ExitStack() as stack:
            bare = stack.enter_context(_server(targets.bare(upstream)))
            side_by_side = [("bare proxy", bare, "")]
            for store in stores:
                server = stack.enter_context(_server(targets.teegate(store, upstream, attestation)))
                side_by_side.append((f"teegate ({store.name})", server, store.key))
            peers = []
            if tools.portkey is not None:
                server = stack.enter_context(_server(targets.portkey(tools.portkey, upstream)))
                peers.append(("Portkey", server, targets.PORTKEY_UPSTREAM_KEY))
            results["interleaved"] = _interleaved(plan, tools, side_by_side + peers, body)
            _embeddings(plan, tools, side_by_side, results)


def _embeddings(
    plan: Plan,
    tools: Tools,
    side_by_side: list[tuple[str, procs.Server, str]],
    results: dict[str, Any],
) -> None:
    """POST /v1/embeddings (8 inputs, base64) at c=1 and c=32, the bare proxy and
    teegate up side by side: teegate's switch, gate, hold and settle on a 44 KB answer."""
    body = embeddings_body()
    out: dict[str, list[dict[str, Any]]] = {}
    for c in (1, 32):
        for label, server, auth in side_by_side:
            url = f"{server.url}/v1/embeddings"
            run_wrk(tools.wrk, url, body, connections=c, duration_s=plan.warmup_s, auth=auth)
            result = run_wrk(
                tools.wrk, url, body, connections=c, duration_s=plan.duration_s, auth=auth
            )
            log(
                f"{label:24} c={c:<4} embeddings {result.rps:9.0f} req/s  "
                f"p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms  "
                f"errors {result.errors}"
            )
            out.setdefault(label, []).append(result.as_dict())
    results["embeddings"] = out


def _interleaved(
    plan: Plan,
    tools: Tools,
    side_by_side: list[tuple[str, procs.Server, str]],
    body: bytes,
    concurrencies: tuple[int, ...] = (1, 32),
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The target points (c=1, c=32) again, with the bare proxy and teegate all up and
    taking turns, round after round: this machine's speed drifts by tens of percent
    within a minute (other tenants), so a ratio of two runs minutes apart measures the
    drift as much as the proxies. Each target's median over the rounds is reported."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for c in concurrencies:
        for _, server, auth in side_by_side:
            url = f"{server.url}/v1/chat/completions"
            run_wrk(
                tools.wrk,
                url,
                body,
                connections=c,
                duration_s=plan.warmup_s,
                auth=auth,
                headers=server.client_headers,
            )
        for _ in range(plan.interleaved_rounds):
            for label, server, auth in side_by_side:
                url = f"{server.url}/v1/chat/completions"
                result = run_wrk(
                    tools.wrk,
                    url,
                    body,
                    connections=c,
                    duration_s=plan.interleaved_s,
                    auth=auth,
                    headers=server.client_headers,
                )
                out.setdefault(label, {}).setdefault(str(c), []).append(result.as_dict())
        for label, _, _ in side_by_side:
            rounds = out[label][str(c)]
            log(
                f"{label:24} c={c:<4} interleaved, {len(rounds)} rounds: req/s "
                + ", ".join(f"{r['rps']:.0f}" for r in rounds)
            )
    return out


def _nonstream_target(
    plan: Plan,
    tools: Tools,
    label: str,
    server: procs.Server,
    auth: str,
    body: bytes,
    results: dict[str, Any],
) -> None:
    url = f"{server.url}/v1/chat/completions"
    rows = []
    headers = server.client_headers
    for c in plan.concurrencies:
        run_wrk(
            tools.wrk,
            url,
            body,
            connections=c,
            duration_s=plan.warmup_s,
            auth=auth,
            headers=headers,
        )
        result = run_wrk(
            tools.wrk,
            url,
            body,
            connections=c,
            duration_s=plan.duration_s,
            auth=auth,
            headers=headers,
        )
        log(
            f"{label:24} c={c:<4} {result.rps:9.0f} req/s  p50 {result.p50_ms:8.2f} ms  "
            f"p99 {result.p99_ms:8.2f} ms  errors {result.errors}"
        )
        rows.append(result.as_dict())
    results["nonstream"][label] = {"rows": rows, "rss_mb": procs.rss_kb(server.pid) / 1024}


def _profile(
    plan: Plan, tools: Tools, server: procs.Server, auth: str, body: bytes
) -> dict[str, Any] | None:
    assert tools.tools_python is not None
    py_spy = tools.tools_python.parent / "py-spy"
    try:
        prof = profile_teegate(
            py_spy,
            tools.wrk,
            f"{server.url}/v1/chat/completions",
            body,
            pid=server.pid,
            auth=auth,
            connections=32,
            duration_s=plan.profile_s,
        )
    except (RuntimeError, OSError) as exc:
        log(f"profile skipped: {exc}")
        return None
    log(f"profile: {prof.samples} samples, {prof.cpu_per_request_us:.0f} µs CPU per request")
    return prof.as_dict()


# --- streams -----------------------------------------------------------------------------


def _stream_phase(
    plan: Plan,
    tools: Tools,
    store: targets.TeegateStore,
    attestation: str,
    results: dict[str, Any],
) -> None:
    body = chat_body(stream=True)
    latency = results["streams"]["latency"]
    hold = results["streams"]["hold"]
    results["streams"]["config"] = {
        "chunks": STREAM_COMPLETION_TOKENS + 2,
        "latency_pace_ms": plan.stream_pace_ms,
        "latency_streams": plan.latency_streams,
        "hold_streams": plan.hold_streams,
        "hold_pace_ms": plan.hold_pace_ms,
        "hold_window_s": plan.hold_window_s,
    }
    proxies = _stream_proxies(tools, store, attestation)

    latency_upstream = targets.devstack("latency", plan.stream_pace_ms, STREAM_COMPLETION_TOKENS)
    with _upstream(latency_upstream) as ds:
        stats = streams.run(
            streams.latency_run(
                f"{ds.url}/v1/chat/completions",
                body,
                streams=plan.latency_streams,
                ca_file=ds.enclave.cert_file,
            )
        )
        latency["upstream alone"] = stats.as_dict()
        _log_latency("upstream alone", stats)
        for label, start, auth in proxies:
            with _server(start(ds)) as server:
                stats = streams.run(
                    streams.latency_run(
                        f"{server.url}/v1/chat/completions",
                        body,
                        auth=auth,
                        headers=server.client_headers,
                        streams=plan.latency_streams,
                    )
                )
                latency[label] = stats.as_dict()
                _log_latency(label, stats)

    hold_upstream = targets.devstack("hold", plan.hold_pace_ms, STREAM_COMPLETION_TOKENS)
    with _upstream(hold_upstream) as ds:
        for label, start, auth in proxies:
            with _server(start(ds)) as server:
                held = streams.run(
                    streams.hold_run(
                        f"{server.url}/v1/chat/completions",
                        body,
                        pid=server.pid,
                        auth=auth,
                        headers=server.client_headers,
                        streams=plan.hold_streams,
                        window_s=plan.hold_window_s,
                        open_bound_s=plan.hold_open_bound_s,
                    )
                )
                hold[label] = held.as_dict()
                log(
                    f"{label:24} {held.opened}/{held.target_streams} open in "
                    f"{held.open_s:.1f} s: {held.rss_per_stream_kb:.1f} KiB/stream, "
                    f"{held.cpu_per_chunk_us:.1f} µs CPU/chunk ({held.chunks_per_s:.0f} "
                    f"chunks/s, CPU {100 * held.cpu_share:.0f}%)"
                )


def _stream_proxies(
    tools: Tools, store: targets.TeegateStore, attestation: str
) -> list[tuple[str, Callable[[targets.Upstream], procs.Server], str]]:
    proxies: list[tuple[str, Callable[[targets.Upstream], procs.Server], str]] = [
        ("bare proxy", targets.bare, ""),
    ]
    litellm = tools.litellm
    if litellm is not None:
        proxies.append(
            ("LiteLLM", lambda up: targets.litellm(litellm, up), targets.LITELLM_MASTER_KEY)
        )
    portkey = tools.portkey
    if portkey is not None:
        proxies.append(
            ("Portkey", lambda up: targets.portkey(portkey, up), targets.PORTKEY_UPSTREAM_KEY)
        )
    proxies.append(
        (f"teegate ({store.name})", lambda up: targets.teegate(store, up, attestation), store.key)
    )
    return proxies


def _log_latency(label: str, stats: streams.LatencyStats) -> None:
    log(
        f"{label:24} TTFT p50 {stats.ttft_p50_ms:7.2f} ms  gap p50 {stats.gap_p50_ms:6.3f} ms "
        f"p99 {stats.gap_p99_ms:6.3f} ms  ({stats.streams} streams, {stats.errors} errors)"
    )


@contextlib.contextmanager
def _server(server: procs.Server) -> Iterator[procs.Server]:
    procs.note_started(server)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def _upstream(upstream: targets.Upstream) -> Iterator[targets.Upstream]:
    with _server(upstream.server):
        yield upstream


# --- open-stream scale ----------------------------------------------------------------------


def _scale_phase(
    tools: Tools,
    stores: list[targets.TeegateStore],
    attestation: str,
    counts: tuple[int, ...],
    args: argparse.Namespace,
    results: dict[str, Any],
) -> None:
    """One worker per target holding each count of paced streams (`bench/open_streams.py`),
    each target started fresh per count, all against one upstream enclave. A target that
    could not open every stream at a count is not asked for more."""
    body = chat_body(stream=True)
    points: dict[str, dict[str, Any]] = {}
    results["scale"] = {
        "config": {
            "counts": list(counts),
            "pace_ms": open_streams.PACE_MS,
            "chunks": open_streams.CHUNKS + 2,
            "window_s": args.scale_window,
            "nofile": results["meta"].get("nofile"),
        },
        "points": points,
    }
    proxies: list[tuple[str, Callable[[targets.Upstream, int], procs.Server], str]] = []
    for label, peer, auth in _stream_proxies(tools, stores[0], attestation):
        if not label.startswith("teegate"):
            proxies.append((label, _any_count(peer), auth))
    for store in stores:

        def start_teegate(
            up: targets.Upstream, n: int, store: targets.TeegateStore = store
        ) -> procs.Server:
            return targets.teegate(store, up, attestation, connections=n + 256)

        proxies.append((f"teegate ({store.name})", start_teegate, store.key))
    nofile = results["meta"].get("nofile") or 0
    needed = 2 * max(counts) + 64  # two sockets per stream, and ~30 fds of its own
    if nofile < needed:
        results["notes"].append(
            f"The open-file limit is {nofile} (this machine would not raise it further): "
            f"{max(counts):,} streams need about {needed:,} in a proxy, so errors at that "
            "count may be the limit's, not the proxy's (`ulimit -Hn`; the bench raises the "
            "soft limit to the hard one, and the hard one too when it may)."
        )
        log(results["notes"][-1])
    dropped: set[str] = set()
    upstream = targets.devstack("scale", open_streams.PACE_MS, open_streams.CHUNKS)
    with _upstream(upstream) as ds:
        for n in counts:
            for label, start, auth in proxies:
                if label in dropped:
                    continue
                server = start(ds, n)
                with _server(server):
                    held: open_streams.ScaleStats = streams.run(
                        open_streams.scale_run(
                            f"{server.url}/v1/chat/completions",
                            body,
                            pid=server.pid,
                            upstream_pid=ds.server.pid,
                            auth=auth,
                            headers=server.client_headers,
                            streams=n,
                            window_s=args.scale_window,
                        )
                    )
                    if label.startswith("teegate"):  # while it runs: its drain settles too
                        store = next(s for s in stores if label == f"teegate ({s.name})")
                        held.books = open_streams.books_after(store.database_url, "bench")
                points.setdefault(label, {})[str(n)] = held.as_dict()
                _log_scale(label, held)
                if held.opened < n:
                    dropped.add(label)
                    results["notes"].append(
                        f"{label} opened {held.opened} of {n} streams: not asked for more."
                    )


def _any_count(
    start: Callable[[targets.Upstream], procs.Server],
) -> Callable[[targets.Upstream, int], procs.Server]:
    """A peer needs no sizing for a stream count (teegate's connection cap does)."""
    return lambda up, _n: start(up)


def _log_scale(label: str, held: open_streams.ScaleStats) -> None:
    books = held.books
    settled = (
        ""
        if books is None
        else f", holds open after {books['open_holds']} ({books['settle_s']} s), "
        f"books {'exact' if books['exact'] else 'NOT exact: ' + books['problem']}"
    )
    log(
        f"{label:24} {held.opened}/{held.target_streams} open in {held.open_s:.1f} s, "
        f"errors {held.errors}: gap p50 {held.gap_p50_ms:.1f} p99 {held.gap_p99_ms:.1f} ms, "
        f"{held.rss_per_stream_kb:.1f} KiB/stream, {held.cpu_per_chunk_us:.1f} µs CPU/chunk "
        f"(CPU {100 * held.cpu_share:.0f}%, upstream {100 * held.upstream_cpu_share:.0f}%, "
        f"load {100 * held.loadgen_cpu_share:.0f}%), {held.fds_open} fds{settled}"
        + (f"; first error: {held.first_error}" if held.first_error else "")
    )


# --- both cores --------------------------------------------------------------------------


def _workers_phase(
    plan: Plan,
    tools: Tools,
    stores: list[targets.TeegateStore],
    attestation: str,
    redis_url: str,
    results: dict[str, Any],
) -> None:
    """teegate with 2 workers (both cores, the Redis limiter) against 1 worker (CPU 0; local
    limiter, and Redis limiter), per store, up side by side and interleaved at c=32 and
    c=1; then the books: every hold settled, the ledger's invariants hold."""
    if not targets.redis_available(redis_url):
        results["notes"].append(f"--workers2 skipped: Redis not reachable at {redis_url}.")
        return
    body = chat_body(stream=False)
    out: dict[str, Any] = {"redis_url": redis_url.rsplit("@", 1)[-1], "stores": {}}
    results["workers"] = out
    with (
        _upstream(targets.devstack("evidence", chunk_delay_ms=0, completion_tokens=1)) as enclave,
        _upstream(targets.nginx(tools.nginx, enclave)) as upstream,
    ):
        for store in stores:
            with contextlib.ExitStack() as stack:
                side_by_side = []
                for label, workers, redis in (
                    ("1 worker", 1, None),
                    ("1 worker, Redis limiter", 1, redis_url),
                    ("2 workers, Redis limiter", 2, redis_url),
                ):
                    server = stack.enter_context(
                        _server(
                            targets.teegate(
                                store, upstream, attestation, workers=workers, redis_url=redis
                            )
                        )
                    )
                    side_by_side.append((label, server, store.key))
                rounds = _interleaved(plan, tools, side_by_side, body, (32, 1))
                books = open_streams.books_after(store.database_url, "bench")  # before drains
            out["stores"][store.name] = {"interleaved": rounds, "books": books}
            log(
                f"teegate ({store.name}) books after the workers phase: "
                f"{'exact' if books['exact'] else 'NOT exact: ' + books['problem']}, "
                f"{books['open_holds']} holds open"
            )


# --- what ran where ----------------------------------------------------------------------


def _meta(plan: Plan, tools: Tools, attestation: str) -> dict[str, Any]:
    def output(*argv: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return "?"
        return (done.stdout + done.stderr).strip()

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    commit = output("git", "-C", str(REPO), "rev-parse", "--short", "HEAD")
    dirty = output("git", "-C", str(REPO), "status", "--porcelain", "--", "src")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": plan.quick,
        "plan": plan.__dict__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "teegate_commit": commit + (" + uncommitted changes in src/" if dirty else ""),
        "attestation": attestation,
        "upstream_tls": True,
        "nginx": output(tools.nginx, "-v").removeprefix("nginx version: "),
        "wrk": output(tools.wrk, "-v").splitlines()[0] if tools.wrk else "?",
        "litellm": LITELLM_VERSION if tools.litellm else None,
        "portkey": PORTKEY_VERSION if tools.portkey else None,
    }
