"""The soak's plot: `tools-venv/bin/python bench/soak_plot.py soak.json soak.png`.

Runs in the bench's tools venv (matplotlib), so it imports nothing of the project.
Error rate, p99 latency and teegate's RSS against time; fault windows shaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    soak = json.loads(Path(sys.argv[1]).read_text())
    rows = soak["timeline"]
    t = [r["t"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    series = [
        ("error rate (%)", [100 * r["error_rate"] for r in rows], "#d62728"),
        ("p99 latency (s)", [r["p99_s"] for r in rows], "#1f77b4"),
        ("teegate RSS (MiB)", [r["rss_mib"] for r in rows], "#2ca02c"),
    ]
    for ax, (label, values, color) in zip(axes, series, strict=True):
        ax.plot(t, values, color=color, marker=".")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        for window in soak["windows"]:
            ax.axvspan(
                window["start"] / 60,
                min(window["end"], rows[-1]["t"]) / 60,
                color="#ff9800",
                alpha=0.15,
            )
    axes[2].set_xlabel("minutes (shaded: an upstream fault is on)")
    fig.suptitle(
        f"teegate soak — {soak['minutes']:g} min at {soak['rate_rps']:.1f} req/s "
        f"({soak['load']:.0%} of {soak['peak_rps']:.1f}), {soak['date']}"
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
