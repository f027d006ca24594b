"""Read one sample of a running gateway's Prometheus metrics."""

from __future__ import annotations

import httpx


def metric(url: str, sample: str) -> float:
    """The value of `sample` (name and labels, as exposed) at `url`/metrics; 0 if absent."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(sample):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
