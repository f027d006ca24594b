"""Usage drawn as SVG on the server: no chart library, no script, nothing fetched
from a CDN. One bar per UTC day, stacked by model, scaled to the dearest day."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from html import escape

from teegate.billing import NANO_PER_USD, nano_to_usd
from teegate.dashboard._services import DayUsage

DAY_MS = 86_400_000
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 240, 84, 28, 16
PALETTE = ("#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4b5563")


@dataclass(frozen=True, slots=True)
class Chart:
    svg: str
    models: list[tuple[str, str]]
    """Each model with its colour, for the legend."""


def usage_chart(days: Sequence[DayUsage], *, first_day_ms: int, day_count: int) -> Chart:
    models = sorted({d.model for d in days})
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    cost: dict[int, dict[str, int]] = defaultdict(dict)
    for d in days:
        cost[d.day_ms][d.model] = cost[d.day_ms].get(d.model, 0) + d.cost_nano
    top = max((sum(v.values()) for v in cost.values()), default=0)
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / day_count
    bar_w = max(step * 0.7, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'role="img" aria-label="Spend per day by model" class="chart">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 8}" y2="{TOP + plot_h}" '
        'class="axis"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 8}" text-anchor="end" class="tick">'
        f"{escape(axis_usd(top))}</text>",
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" class="tick">$0</text>',
    ]
    for index in range(day_count):
        day_ms = first_day_ms + index * DAY_MS
        x = LEFT + index * step + (step - bar_w) / 2
        y = float(TOP + plot_h)
        for model in models:
            amount = cost.get(day_ms, {}).get(model, 0)
            if amount <= 0 or top <= 0:
                continue
            h = max(plot_h * amount / top, 1.0)
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour[model]}"><title>{escape(model)} {_day(day_ms)}: '
                f"${escape(nano_to_usd(amount))}</title></rect>"
            )
        if index % max(day_count // 6, 1) == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" '
                f'class="tick">{_day(day_ms)[5:]}</text>'
            )
    parts.append("</svg>")
    return Chart("".join(parts), [(m, colour[m]) for m in models])


def axis_usd(nano: int) -> str:
    """The top of the axis, short: cents from a dollar up, else two significant
    digits (the exact amounts are in each bar's title and in the tables)."""
    amount = Decimal(nano) / NANO_PER_USD
    if amount == 0:
        return "$0"
    if amount >= 1:
        return f"${amount:.2f}"
    return f"${amount.quantize(Decimal(1).scaleb(amount.adjusted() - 1)):f}"


def _day(day_ms: int) -> str:
    return datetime.fromtimestamp(day_ms / 1000, UTC).strftime("%Y-%m-%d")
