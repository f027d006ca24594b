"""The plot of docs/performance.md: `tools-venv/bin/python bench/plot.py results.json out.png`.

Runs in the bench's tools venv (matplotlib), so it imports nothing of the project.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {
    "nginx (upstream alone)": "#9e9e9e",
    "bare proxy": "#1f77b4",
    "LiteLLM": "#d62728",
    "Portkey": "#ff7f0e",
    "teegate (sqlite)": "#2ca02c",
    "teegate (postgres)": "#17becf",
}
UPSTREAM = "upstream alone"
BARE = "bare proxy"


def _nonstream(ax_rps: Any, ax_lat: Any, results: dict[str, Any]) -> None:
    for label, target in results["nonstream"].items():
        rows = sorted(target["rows"], key=lambda r: r["connections"])
        cs = [r["connections"] for r in rows]
        color = COLORS.get(label)
        ax_rps.plot(cs, [r["rps"] for r in rows], "o-", label=label, color=color)
        ax_lat.plot(cs, [r["p50_ms"] for r in rows], "o-", label=f"{label} p50", color=color)
        ax_lat.plot(cs, [r["p99_ms"] for r in rows], "x--", color=color, alpha=0.6)
    concurrencies = sorted(
        {r["connections"] for t in results["nonstream"].values() for r in t["rows"]}
    )
    for ax in (ax_rps, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.set_yscale("log")
        ax.set_xlabel("concurrent connections")
        ax.grid(True, which="both", alpha=0.3)
    ax_rps.set_title("Non-stream throughput")
    ax_rps.set_ylabel("requests / s")
    ax_rps.legend(fontsize=8)
    ax_lat.set_title("Non-stream latency (solid p50, dashed p99)")
    ax_lat.set_ylabel("ms")


def _stream_latency(ax: Any, results: dict[str, Any]) -> None:
    latency = results["streams"]["latency"]
    base = latency.get(UPSTREAM)
    labels = [k for k in latency if k != UPSTREAM]
    if base is None or not labels:
        ax.set_visible(False)
        return
    metrics = (("ttft_p50_ms", "TTFT p50"), ("gap_p50_ms", "gap p50"), ("gap_p99_ms", "gap p99"))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [latency[label][k] - base[k] for k, _ in metrics]
        xs = [m + i * width for m in range(len(metrics))]
        ax.bar(xs, values, width, label=label, color=COLORS.get(label))
    ax.set_xticks([m + width * (len(labels) - 1) / 2 for m in range(len(metrics))])
    ax.set_xticklabels([name for _, name in metrics])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("ms added over the upstream alone")
    ax.set_title("Streams: latency added (200 chunks, paced)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def _stream_hold(ax: Any, results: dict[str, Any]) -> None:
    hold = results["streams"]["hold"]
    if not hold:
        ax.set_visible(False)
        return
    labels = list(hold)
    metrics = (
        ("rss_per_stream_kb", "KiB RSS per open stream"),
        ("cpu_per_chunk_us", "µs CPU per relayed chunk"),
    )
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [hold[label][k] for k, _ in metrics]
        values = [0.0 if math.isnan(v) else v for v in values]
        xs = [m + i * width for m in range(len(metrics))]
        ax.bar(xs, values, width, label=label, color=COLORS.get(label))
    ax.set_xticks([m + width * (len(labels) - 1) / 2 for m in range(len(metrics))])
    ax.set_xticklabels([name for _, name in metrics])
    n = next(iter(hold.values()))["target_streams"]
    ax.set_title(f"Streams: {n:,} open at once, one worker")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)


def _scale(ax_rss: Any, ax_gap: Any, results: dict[str, Any]) -> None:
    """The open-stream scale phase: RSS per stream and gap p99 against the stream count."""
    points = results["scale"]["points"]
    bare = points.get(BARE, {})
    for label, by_n in points.items():
        counts = sorted(int(n) for n in by_n)
        color = COLORS.get(label)
        rss = [by_n[str(n)]["rss_per_stream_kb"] for n in counts]
        ax_rss.plot(counts, rss, "o-", label=label, color=color)
        gap = [
            by_n[str(n)]["gap_p99_ms"] - bare[str(n)]["gap_p99_ms"] if str(n) in bare else math.nan
            for n in counts
        ]
        ax_gap.plot(counts, gap, "o-", label=label, color=color)
    for ax in (ax_rss, ax_gap):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent streams, one worker")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    counts = sorted({int(n) for by_n in points.values() for n in by_n})
    for ax in (ax_rss, ax_gap):
        ax.set_xticks(counts, [f"{n:,}" for n in counts])
    ax_gap.set_yscale("symlog", linthresh=1)
    ax_rss.set_title("Open streams: RSS per stream")
    ax_rss.set_ylabel("KiB")
    ax_gap.set_title("Open streams: inter-chunk gap p99 added over the bare proxy")
    ax_gap.set_ylabel("ms")


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    rows = 3 if results.get("scale") else 2
    fig, axes = plt.subplots(rows, 2, figsize=(13, 4.5 * rows))
    _nonstream(axes[0][0], axes[0][1], results)
    _stream_latency(axes[1][0], results)
    _stream_hold(axes[1][1], results)
    if rows == 3:
        _scale(axes[2][0], axes[2][1], results)
    meta = results["meta"]
    fig.suptitle(
        f"teegate vs bare proxy vs LiteLLM vs Portkey — {meta['cores']} cores, one worker each, "
        f"{meta['date']}{' (quick)' if meta['quick'] else ''}"
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
