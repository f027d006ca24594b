"""The ledger's records as billing sees them, and the store Protocol that keeps them.

Billing decides amounts; a store (SQL, in `teegate.store`) only applies them,
atomically. Every amount and token count is checked to be an exact int on
construction, so no float can travel from here to the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from teegate.billing._money import exact_int
from teegate.billing._pricing import Rates, cost_nano
from teegate.invariants import invariant

SettledBy = Literal["usage", "fallback", "expired-hold", "void"]
HoldState = Literal["open", "posted", "voided", "expired"]
SETTLED_BY: tuple[SettledBy, ...] = ("usage", "fallback", "expired-hold", "void")
MAX_RECORDED_TOKENS = 2**53
"""Token counts above this (an upstream reporting nonsense) are clamped before storage."""


@dataclass(frozen=True, slots=True)
class Hold:
    """A pending debit placed before the upstream call; resolved exactly once.

    `request_id` is the idempotency key, as a transfer id is in TigerBeetle.
    """

    request_id: str
    account_id: int
    key_id: str
    model: str
    stream: bool
    rates: Rates
    prompt_tokens: int
    completion_tokens: int
    amount_nano: int
    created_ms: int
    expires_ms: int
    budgeted: bool = False
    """Its key or account has a spend budget: placing and settling it also move the
    budgets' held and spent amounts (a hold without one touches no budget row). Not a
    column: a hold read back asks the budgets table."""
    idempotency_key: str | None = None
    """The SHA-256 (hex) of the client's Idempotency-Key, if it sent one: unique per
    account, so a retry finds this hold instead of placing another."""
    fingerprint: str | None = None
    """The SHA-256 (hex) of the request body sent with `idempotency_key`."""
    output_bytes: int = 0
    """Output delivered as of the lease's last checkpoint (read back by the reaper)."""

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens", "amount_nano", "created_ms",
                     "output_bytes"):  # fmt: skip
            exact_int(getattr(self, name), name)
        invariant(
            self.amount_nano == cost_nano(self.prompt_tokens, self.completion_tokens, self.rates),
            f"hold {self.request_id}: amount is not the cost of its estimate",
        )
        invariant(self.expires_ms > self.created_ms, f"hold {self.request_id}: already expired")


BudgetPeriod = Literal["day", "month", "lifetime"]
BUDGET_PERIODS: tuple[BudgetPeriod, ...] = ("day", "month", "lifetime")


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """A spend budget, and what is spent in its period and held against it now.
    `key_id` is None for the account's own budget (every key of it counts)."""

    key_id: str | None
    period: BudgetPeriod
    limit_nano: int
    spent_nano: int
    held_nano: int

    @property
    def remaining_nano(self) -> int:
        return max(0, self.limit_nano - self.spent_nano - self.held_nano)


@dataclass(frozen=True, slots=True)
class PriorHold:
    """The hold an Idempotency-Key was first placed with: its request, whether it is
    still open, and whether its body was the same."""

    request_id: str
    state: HoldState
    same_body: bool


@dataclass(frozen=True, slots=True)
class Placement:
    """Whether a hold fitted, and what was available to it (for the 402 message);
    a hold that fitted the balance but not a budget names that budget; a hold whose
    Idempotency-Key an earlier hold of the account has (not voided) names that one."""

    placed: bool
    available_nano: int
    over_budget: BudgetUse | None = None
    prior: PriorHold | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """One live hold's lease renewal and the output its request has delivered so far."""

    request_id: str
    output_bytes: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one hold resolves: the cost to post (at most the hold) and the usage record."""

    hold: Hold
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int
    settled_by: SettledBy
    status: str
    capped: bool
    settled_ms: int

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens", "cost_nano", "settled_ms"):
            exact_int(getattr(self, name), name)
        invariant(
            0 <= self.cost_nano <= self.hold.amount_nano,
            f"settlement of {self.hold.request_id}: cost outside [0, held]",
        )
        invariant(
            self.settled_by != "void" or self.cost_nano == 0,
            f"settlement of {self.hold.request_id}: a void costs nothing",
        )

    @property
    def hold_state(self) -> HoldState:
        if self.settled_by == "expired-hold":
            return "expired"
        return "posted" if self.cost_nano > 0 else "voided"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One settled request: who, which model, tokens, cost and timings. Never any text."""

    request_id: str
    account_id: int
    account: str
    key_id: str
    model: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int
    held_nano: int
    settled_by: str
    status: str
    capped: bool
    started_ms: int
    settled_ms: int


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: int
    balance_nano: int
    held_nano: int

    @property
    def available_nano(self) -> int:
        return self.balance_nano - self.held_nano


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Newest first; `account_id` or `account_name` narrows to one account."""

    limit: int
    account_id: int | None = None
    account_name: str | None = None
    since_ms: int | None = None

    def __post_init__(self) -> None:
        invariant(self.limit > 0, "a usage query needs a positive limit")


class LedgerStore(Protocol):
    """What billing needs of storage; each write is atomic, and settle is idempotent."""

    async def place_hold(self, hold: Hold) -> Placement:
        """Hold `amount_nano` iff balance - held >= amount, in one conditional write."""
        ...

    async def settle(self, settlement: Settlement) -> bool:
        """Resolve an open hold; False (and no change) if it was already resolved."""
        ...

    async def expired_holds(self, now_ms: int, ttl_ms: int, limit: int) -> list[Hold]:
        """Open holds whose lease lapsed: past their expiry, or placed or last renewed
        more than `ttl_ms` (the TTL configured now) ago."""
        ...

    async def renew_holds(self, renewals: Sequence[Renewal], now_ms: int, expires_ms: int) -> None:
        """Extend these holds' leases to `expires_ms` and checkpoint their output, in
        one transaction; a hold no longer open is left as it is."""
        ...

    async def balance(self, account_id: int) -> Balance | None: ...

    async def budgets(self, account_id: int, key_id: str, now_ms: int) -> list[BudgetUse]:
        """The key's budgets and its account's, with what is spent in the period of
        `now_ms` and held now."""
        ...

    async def usage(self, query: UsageQuery) -> list[UsageRecord]: ...

    async def generation(self, account_id: int, request_id: str) -> UsageRecord | None: ...
