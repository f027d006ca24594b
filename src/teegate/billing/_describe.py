"""Usage records and balances as clients and operators read them: money as USD strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from teegate.billing._money import nano_to_usd
from teegate.billing._records import Balance, BudgetUse, UsageRecord


def describe_generation(record: UsageRecord) -> dict[str, Any]:
    """One request's tokens and cost, named as OpenRouter's `/generation` names them."""
    return {
        "id": record.request_id,
        "object": "generation",
        "model": record.model,
        "api_key_id": record.key_id,
        "streamed": record.stream,
        "created_at": iso_utc(record.started_ms),
        "tokens_prompt": record.prompt_tokens,
        "tokens_completion": record.completion_tokens,
        "total_cost": nano_to_usd(record.cost_nano),
        "held": nano_to_usd(record.held_nano),
        "settled_by": record.settled_by,
        "status": record.status,
        "capped": record.capped,
        "latency_ms": record.settled_ms - record.started_ms,
    }


def describe_balance(balance: Balance) -> dict[str, Any]:
    return {
        "object": "balance",
        "currency": "USD",
        "balance": nano_to_usd(balance.balance_nano),
        "held": nano_to_usd(balance.held_nano),
        "available": nano_to_usd(balance.available_nano),
    }


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def iso_utc(epoch_ms: int) -> str:
    return (EPOCH + epoch_ms * ONE_MS).isoformat(timespec="milliseconds")


def parse_since(text: str) -> int:
    """An ISO date or date-time (UTC unless it says otherwise) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"'{text}' is not a date: use YYYY-MM-DD or an ISO 8601 date-time"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // ONE_MS


def describe_budget(budget: BudgetUse) -> dict[str, Any]:
    """A spend budget as `GET /v1/key` and `teegate keys show` answer it (USD strings)."""
    return {
        "scope": "key" if budget.key_id is not None else "account",
        "period": budget.period,
        "limit": nano_to_usd(budget.limit_nano),
        "spent": nano_to_usd(budget.spent_nano),
        "held": nano_to_usd(budget.held_nano),
        "remaining": nano_to_usd(budget.remaining_nano),
    }
