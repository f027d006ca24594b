"""Read one sample of a running gateway's Prometheus metrics (as an operator)."""

from __future__ import annotations

import httpx

from tests.support.gateway import ADMIN_TOKEN

OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
"""What opens /metrics and /readyz's reasons on a test gateway."""


def metrics_text(url: str) -> str:
    response = httpx.get(f"{url}/metrics", headers=OPERATOR)
    response.raise_for_status()
    return response.text


def metric(url: str, sample: str) -> float:
    """The value of `sample` (name and labels, as exposed) at `url`/metrics; 0 if absent."""
    for line in metrics_text(url).splitlines():
        if line.startswith(sample):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
