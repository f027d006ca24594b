"""Prometheus metrics, on a registry of the app's own (nothing global at import).

Labels are routes, status codes, models and upstreams: never content.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


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
        self.ratelimit_degraded = Gauge(
            "teegate_ratelimit_degraded",
            "1 while Redis is unreachable and each process enforces limit / processes",
            registry=self.registry,
        )
        self.catalog_models = Gauge(
            "teegate_catalog_servable_models",
            "Models the gate accepts now",
            registry=self.registry,
        )

        self.settlements_capped = Counter(
            "teegate_settlements_capped",
            "Settlements whose real cost exceeded the hold and were charged the hold",
            ["model"],
            registry=self.registry,
        )
        self.holds_live = Gauge(
            "teegate_holds_live",
            "Holds this process is running a request for (their leases are renewed)",
            registry=self.registry,
        )
        self.settlements_deferred = Gauge(
            "teegate_settlements_deferred",
            "Settlements waiting in memory for the database to take them",
            registry=self.registry,
        )

    def count_capped(self, model: str) -> None:
        self.settlements_capped.labels(model).inc()

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
