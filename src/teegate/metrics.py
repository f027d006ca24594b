"""Prometheus metrics, on a registry of the app's own (nothing global at import).

Labels are routes, status codes, models and upstreams: never content.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_children: dict[tuple[str, int], Any] = {}
        self.requests = Counter(
            "teegate_requests",
            "HTTP requests answered",
            ["route", "status"],
            registry=self.registry,
        )
        self.completions = Counter(
            "teegate_completions",
            "Chat completions by model and outcome",
            ["model", "upstream", "outcome"],
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "teegate_upstream_first_byte_seconds",
            "Time to the upstream's first byte",
            ["upstream"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.catalog_models = Gauge(
            "teegate_catalog_servable_models",
            "Models the gate accepts now",
            registry=self.registry,
        )

    def count_request(self, route: str, status: int) -> None:
        """Counted through a cached child: `labels()` on every request is a dict build
        and a lock for nothing."""
        child = self._request_children.get((route, status))
        if child is None:
            child = self._request_children[(route, status)] = self.requests.labels(
                route, str(status)
            )
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
