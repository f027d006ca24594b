"""The budget side of a budgeted hold's writes, on either engine.

A budgeted hold is decided after its account's conditional UPDATE, so its account
row is locked by the same transaction: every write that changes a budget row
takes that lock first, so the budgets read here are current and nobody else's
write to them can interleave. If any of the key's or account's budgets cannot
take the hold, the account's held amount is put back and the hold is refused,
naming the budget; otherwise every one of them takes it. A settlement moves the
amount from held to spent, in the period it settles in (billing._budget).
"""

from __future__ import annotations

from typing import Any

from teegate.billing import BudgetUse, Hold, Settlement, period_starts

# SQLite, named parameters ------------------------------------------------------------

_CURRENT = "(CASE period WHEN 'day' THEN :day WHEN 'month' THEN :month ELSE 0 END)"
_SPENT = f"(CASE WHEN period_start_ms < {_CURRENT} THEN 0 ELSE spent_nano END)"
_MINE = "account_id = :account AND key_id IN ('', :key)"

SQLITE_OVER = (
    f"SELECT key_id, period, limit_nano, {_SPENT}, held_nano FROM budgets"  # noqa: S608
    f" WHERE {_MINE} AND limit_nano - {_SPENT} - held_nano < :amount"
    " ORDER BY key_id DESC, period LIMIT 1"
)
SQLITE_HOLD = (
    f"UPDATE budgets SET spent_nano = {_SPENT},"  # noqa: S608
    f" period_start_ms = max(period_start_ms, {_CURRENT}), held_nano = held_nano + :amount"
    f" WHERE {_MINE}"
)
SQLITE_SETTLE = (
    f"UPDATE budgets SET spent_nano = {_SPENT} + :cost,"  # noqa: S608
    f" period_start_ms = max(period_start_ms, {_CURRENT}),"
    f" held_nano = max(held_nano - :amount, 0) WHERE {_MINE}"
)
SQLITE_UNHOLD = "UPDATE accounts SET held_nano = held_nano - ? WHERE id = ?"

# PostgreSQL: $1 account, $2 key, $3 day start, $4 month start, $5 amount, $6 cost ------------

_PG_CURRENT = "(CASE period WHEN 'day' THEN $3::bigint WHEN 'month' THEN $4::bigint ELSE 0 END)"
_PG_SPENT = f"(CASE WHEN period_start_ms < {_PG_CURRENT} THEN 0 ELSE spent_nano END)"
_PG_MINE = "account_id = $1::integer AND key_id IN ('', $2::varchar)"

PG_OVER = (
    f"SELECT key_id, period, limit_nano, {_PG_SPENT}, held_nano FROM budgets"  # noqa: S608
    f" WHERE {_PG_MINE} AND limit_nano - {_PG_SPENT} - held_nano < $5::bigint"
    " ORDER BY key_id DESC, period LIMIT 1"
)
PG_HOLD = (
    f"UPDATE budgets SET spent_nano = {_PG_SPENT},"  # noqa: S608
    f" period_start_ms = greatest(period_start_ms, {_PG_CURRENT}),"
    f" held_nano = held_nano + $5::bigint WHERE {_PG_MINE}"
)
PG_SETTLE = (
    f"UPDATE budgets SET spent_nano = {_PG_SPENT} + $6::bigint,"  # noqa: S608
    f" period_start_ms = greatest(period_start_ms, {_PG_CURRENT}),"
    f" held_nano = greatest(held_nano - $5::bigint, 0) WHERE {_PG_MINE}"
)
PG_UNHOLD = "UPDATE accounts SET held_nano = held_nano - $1 WHERE id = $2"


def hold_params(hold: Hold) -> dict[str, Any]:
    day, month = period_starts(hold.created_ms)
    return {
        "account": hold.account_id,
        "key": hold.key_id,
        "day": day,
        "month": month,
        "amount": hold.amount_nano,
    }


def settle_params(settlement: Settlement) -> dict[str, Any]:
    hold = settlement.hold
    day, month = period_starts(settlement.settled_ms)
    return {
        "account": hold.account_id,
        "key": hold.key_id,
        "day": day,
        "month": month,
        "amount": hold.amount_nano,
        "cost": settlement.cost_nano,
    }


def pg_args(params: dict[str, Any]) -> list[Any]:
    names = ["account", "key", "day", "month", "amount", "cost"]
    return [params[name] for name in names if name in params]


def budget_use(row: Any) -> BudgetUse:
    key_id, period, limit_nano, spent_nano, held_nano = row
    return BudgetUse(key_id or None, period, limit_nano, spent_nano, held_nano)
