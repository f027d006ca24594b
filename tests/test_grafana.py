"""docs/grafana/teegate.json: a dashboard Grafana can import, charting only series the
gateway exposes (a renamed metric would leave a panel empty without a word)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from teegate.metrics import Metrics

BOARD = Path(__file__).parent.parent / "docs" / "grafana" / "teegate.json"
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def exposed_series() -> set[str]:
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in SAMPLE_SUFFIXES[family.type]
    }


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_the_board_charts_only_series_the_gateway_exposes() -> None:
    board = json.loads(BOARD.read_text())
    used = {
        name
        for panel in panels(board)
        for target in panel["targets"]
        for name in re.findall(r"\bteegate_\w+", target["expr"])
    }
    assert used <= exposed_series(), used - exposed_series()
    wanted = {
        "teegate_requests_total",
        "teegate_completions_total",
        "teegate_request_duration_seconds_bucket",
        "teegate_time_to_first_token_seconds_bucket",
        "teegate_tokens_total",
        "teegate_revenue_nano_usd_total",
        "teegate_open_holds",
        "teegate_ratelimit_refusals_total",
        "teegate_attestation_verdict_age_seconds",
    }
    assert wanted <= used


def test_every_panel_reads_the_datasource_variable() -> None:
    board = json.loads(BOARD.read_text())
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource", "datasource", "prometheus",
    )  # fmt: skip
    for panel in panels(board):
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(s == {"type": "prometheus", "uid": "${datasource}"} for s in sources)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
