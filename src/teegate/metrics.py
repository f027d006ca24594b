"""Prometheus metrics, on a registry of the app's own (nothing global at import).

Labels are routes, status codes, models, upstreams and outcome statuses: never
content. Each series the request path moves is moved through a cached child
(`labels()` on every request is a dict build and a lock for nothing); the gauges of
state that lives elsewhere (limiter, catalog, verdicts) are read when scraped.
`docs/grafana/teegate.json` charts them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from teegate.billing import Hold, Settlement
from teegate.catalog import AttestationStatus

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""Whole requests: a long stream runs for minutes, a refusal for microseconds."""
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._ttft_children: dict[str, Any] = {}
        self._settled_children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._refusal_children: dict[str, Any] = {}
        self.requests = Counter(
            "teegate_requests",
            "HTTP requests answered",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "teegate_request_duration_seconds",
            "Time from a request's arrival to the end of its answer (a stream's last byte)",
            ["route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "teegate_time_to_first_token_seconds",
            "Time from a completion's arrival to the first byte of its answer's body "
            "(a stream's first event, a whole answer's body)",
            ["model"],
            buckets=TTFT_BUCKETS_S,
            registry=self.registry,
        )
        self.completions = Counter(
            "teegate_completions",
            "Held requests settled, by model and outcome (ok, upstream_error, client_gone, ...)",
            ["model", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "teegate_tokens",
            "Tokens billed, by model and kind (prompt, completion)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.revenue = Counter(
            "teegate_revenue_nano_usd",
            "Charged to balances by this process's settlements, in nano-USD (1e-9 USD)",
            ["model"],
            registry=self.registry,
        )
        self.open_holds = Gauge(
            "teegate_open_holds",
            "Holds this process placed and has not settled yet (requests under way)",
            registry=self.registry,
        )
        self.ratelimit_refusals = Counter(
            "teegate_ratelimit_refusals",
            "Requests refused with 429, by the limit that refused them (requests, tokens)",
            ["limit"],
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
        self.verdict_age = Gauge(
            "teegate_attestation_verdict_age_seconds",
            "Age of the upstream's current passing verdict (NaN: none passes)",
            ["upstream"],
            registry=self.registry,
        )
        self.attestation_passing = Gauge(
            "teegate_attestation_passing",
            "1 while the upstream has a passing verdict, else 0",
            ["upstream"],
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

    def count_request(self, route: str, status: int, duration_s: float) -> None:
        children = self._request_children.get((route, status))
        if children is None:
            labels = (route, str(status))
            children = self._request_children[(route, status)] = (
                self.requests.labels(*labels),
                self.request_duration.labels(*labels),
            )
        children[0].inc()
        children[1].observe(duration_s)

    def observe_first_token(self, model: str, seconds: float) -> None:
        child = self._ttft_children.get(model)
        if child is None:
            child = self._ttft_children[model] = self.time_to_first_token.labels(model)
        child.observe(seconds)

    def count_refusal(self, limit: str) -> None:
        child = self._refusal_children.get(limit)
        if child is None:
            child = self._refusal_children[limit] = self.ratelimit_refusals.labels(limit)
        child.inc()

    # billing.SettlementObserver: told of each hold placed and each settlement

    def placed(self, hold: Hold) -> None:
        self.open_holds.inc()

    def settled(self, settlement: Settlement, resolved: bool) -> None:
        """Counted once, by the settlement that resolved the hold (a repeat is not)."""
        self.open_holds.dec()
        if not resolved:
            return
        if settlement.capped:
            self.settlements_capped.labels(settlement.hold.model).inc()
        key = (settlement.hold.model, settlement.status)
        children = self._settled_children.get(key)
        if children is None:
            model = key[0]
            children = self._settled_children[key] = (
                self.completions.labels(*key),
                self.tokens.labels(model, "prompt"),
                self.tokens.labels(model, "completion"),
                self.revenue.labels(model),
            )
        completions, prompt, completion, revenue = children
        completions.inc()
        prompt.inc(settlement.prompt_tokens)
        completion.inc(settlement.completion_tokens)
        revenue.inc(settlement.cost_nano)

    def watch_verdicts(
        self, upstreams: Iterable[str], status: Callable[[str], AttestationStatus]
    ) -> None:
        """Read at each scrape from the upstream's attestation status now."""
        for upstream in upstreams:
            self.verdict_age.labels(upstream).set_function(
                functools.partial(_age_s, status, upstream)
            )
            self.attestation_passing.labels(upstream).set_function(
                functools.partial(_passing, status, upstream)
            )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _passing(status_of: Callable[[str], AttestationStatus], upstream: str) -> float:
    return float(status_of(upstream).passed)


def _age_s(status_of: Callable[[str], AttestationStatus], upstream: str) -> float:
    """NaN without a passing verdict (provider-asserted upstreams have none to age)."""
    status = status_of(upstream)
    if not status.passed or status.verified_at is None:
        return float("nan")
    return max(0.0, time.time() - status.verified_at)
