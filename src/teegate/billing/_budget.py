"""Spend budgets' periods: a day and a month are UTC calendar ones, and a budget's
spent amount counts from the start of the period a write falls in.

A budget row keeps the start of the period its spent amount is for; a write in a
later period counts that amount as 0 first. Held amounts are not per period: a
hold placed before midnight and settled after still counts until it settles, and
its cost goes to the period it settles in, so spent + held never passes the limit.
"""

from __future__ import annotations

from datetime import UTC, datetime

from teegate.billing._records import BudgetPeriod


def period_starts(now_ms: int) -> tuple[int, int]:
    """The start (epoch ms) of the UTC day and of the UTC month `now_ms` falls in."""
    now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    return int(day.timestamp()) * 1000, int(month.timestamp()) * 1000


def period_start(period: BudgetPeriod, now_ms: int) -> int:
    day, month = period_starts(now_ms)
    return {"day": day, "month": month, "lifetime": 0}[period]
