"""Billing: exact money, prices, estimates, holds, outcomes and settlement, usage records.

No web framework and no SQL here: storage is reached through `LedgerStore`.
"""

from teegate.billing._budget import period_start, period_starts
from teegate.billing._describe import (
    describe_balance,
    describe_budget,
    describe_generation,
    iso_utc,
    parse_since,
)
from teegate.billing._estimate import (
    EMBEDDING_INPUT_OVERHEAD_TOKENS,
    IMAGE_PART_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    TOOL_OVERHEAD_TOKENS,
    embedding_input_bound,
    held_completion_tokens,
    hold_amount_nano,
    prompt_upper_bound,
)
from teegate.billing._meter import HoldRequest, LedgerMeter, SettlementObserver, wall_ms
from teegate.billing._money import (
    NANO_PER_USD,
    TOKENS_PER_PRICE_UNIT,
    exact_int,
    marked_up_price,
    nano_to_usd,
    usd_to_nano,
)
from teegate.billing._outcome import Outcome, Status, Usage, read_usage
from teegate.billing._pricing import Rates, cost_nano
from teegate.billing._reaper import Reaper
from teegate.billing._records import (
    BUDGET_PERIODS,
    SETTLED_BY,
    Balance,
    BudgetPeriod,
    BudgetUse,
    Hold,
    HoldState,
    LedgerStore,
    Placement,
    PriorHold,
    Renewal,
    SettledBy,
    Settlement,
    UsageQuery,
    UsageRecord,
)
from teegate.billing._service import MAX_USAGE_PAGE, Billing
from teegate.billing._settle import (
    FALLBACK_BYTES_PER_TOKEN,
    expired_settlement,
    fallback_completion_tokens,
    settled_tokens,
    settlement_for,
    void_settlement,
)
from teegate.errors import InvariantViolation, MoneyError
from teegate.invariants import invariant

__all__ = [
    "BUDGET_PERIODS",
    "EMBEDDING_INPUT_OVERHEAD_TOKENS",
    "FALLBACK_BYTES_PER_TOKEN",
    "IMAGE_PART_TOKENS",
    "MAX_USAGE_PAGE",
    "MESSAGE_OVERHEAD_TOKENS",
    "NANO_PER_USD",
    "REQUEST_OVERHEAD_TOKENS",
    "SETTLED_BY",
    "TOKENS_PER_PRICE_UNIT",
    "TOOL_OVERHEAD_TOKENS",
    "Balance",
    "Billing",
    "BudgetPeriod",
    "BudgetUse",
    "Hold",
    "HoldRequest",
    "HoldState",
    "InvariantViolation",
    "LedgerMeter",
    "LedgerStore",
    "MoneyError",
    "Outcome",
    "Placement",
    "PriorHold",
    "Rates",
    "Reaper",
    "Renewal",
    "SettledBy",
    "Settlement",
    "SettlementObserver",
    "Status",
    "Usage",
    "UsageQuery",
    "UsageRecord",
    "cost_nano",
    "describe_balance",
    "describe_budget",
    "describe_generation",
    "embedding_input_bound",
    "exact_int",
    "expired_settlement",
    "fallback_completion_tokens",
    "held_completion_tokens",
    "hold_amount_nano",
    "invariant",
    "iso_utc",
    "marked_up_price",
    "nano_to_usd",
    "parse_since",
    "period_start",
    "period_starts",
    "prompt_upper_bound",
    "read_usage",
    "settled_tokens",
    "settlement_for",
    "usd_to_nano",
    "void_settlement",
    "wall_ms",
]
