"""The meter the chat service calls (`teegate.chat.Meter`): place a hold before the
upstream call, settle it after.

Amounts are decided here; the store only applies them, each in one atomic write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from teegate.billing._estimate import (
    held_completion_tokens,
    hold_amount_nano,
    prompt_upper_bound,
)
from teegate.billing._money import nano_to_usd
from teegate.billing._outcome import Outcome
from teegate.billing._pricing import Rates
from teegate.billing._records import BudgetUse, Hold, LedgerStore, Placement, Settlement
from teegate.billing._settle import settlement_for, void_settlement
from teegate.errors import BudgetExceeded, InsufficientBalance
from teegate.invariants import invariant

log = structlog.get_logger("teegate.billing")

Clock = Callable[[], int]
_HELD_FOR = {True: "its prompt and max_tokens", False: "its input tokens"}
_LOWER = {True: "lower max_tokens", False: "send fewer or shorter inputs"}


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def seconds_to_ms(seconds: float) -> int:
    """Durations come from settings as seconds; the ledger keeps integer milliseconds."""
    return max(1, round(seconds * 1000))


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """What a service asks billing to hold for one request, before it runs: who
    pays, at which rates, and the body whose cost is estimated; or, where the
    service has bounded the prompt itself (embeddings' inputs), that bound."""

    request_id: str
    account_id: int
    key_id: str
    model: str
    rates: Rates
    stream: bool
    body: Mapping[str, Any]
    max_output_tokens: int
    choices: int
    prompt_tokens: int | None = None
    budgeted: bool = False


class SettlementObserver(Protocol):
    """Told of each hold the meter places and each settlement it posts (an operator's
    counters: open holds, tokens, revenue). Called on the request path: it must be
    quick and must not raise."""

    def placed(self, hold: Hold) -> None: ...

    def settled(self, settlement: Settlement, resolved: bool) -> None:
        """`resolved`: this settlement resolved the hold (False: it was already
        resolved, or the store failed and the reaper will)."""
        ...


class LedgerMeter:
    """Holds a conservative estimate per request, then settles the actual cost."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        hold_ttl_s: float,
        clock: Clock = wall_ms,
        observer: SettlementObserver | None = None,
    ) -> None:
        self._store = store
        self._observer = observer
        self._ttl_ms = seconds_to_ms(hold_ttl_s)
        self._clock = clock
        self._voiding: set[asyncio.Task[None]] = set()
        self._settling: set[asyncio.Future[None]] = set()

    async def settled(self) -> None:
        """Wait for the settlements under way now. An answer is settled after it is
        sent, so a client that reads its balance or usage right after its answer would
        otherwise find that answer not charged yet."""
        if self._settling or self._voiding:
            await asyncio.wait([*self._settling, *self._voiding])

    async def place(self, request: HoldRequest) -> Hold:
        """Place the hold or refuse with 402; nothing has gone upstream either way."""
        hold = self.hold_for(request)
        invariant(hold.amount_nano >= 0, f"hold {hold.request_id}: negative amount")
        placement = await self._placed(hold)
        if not placement.placed and placement.over_budget is not None:
            raise BudgetExceeded(_over_budget(hold, placement.over_budget))
        if not placement.placed:
            generates = hold.completion_tokens > 0
            raise InsufficientBalance(
                f"Insufficient balance: this request needs {nano_to_usd(hold.amount_nano)} USD "
                f"held against your balance ({_HELD_FOR[generates]} at the model's price), "
                f"but {nano_to_usd(max(placement.available_nano, 0))} USD is available. "
                f"Add credit or {_LOWER[generates]}."
            )
        if self._observer is not None:
            self._observer.placed(hold)
        return hold

    def now_ms(self) -> int:
        return self._clock()

    def hold_for(self, request: HoldRequest) -> Hold:
        """The hold a request needs, at the rates it was admitted at."""
        rates = request.rates
        prompt = request.prompt_tokens
        if prompt is None:
            prompt = prompt_upper_bound(request.body)
        completion = held_completion_tokens(request.max_output_tokens, request.choices)
        created = self._clock()
        return Hold(
            request_id=request.request_id,
            account_id=request.account_id,
            key_id=request.key_id,
            model=request.model,
            stream=request.stream,
            rates=rates,
            prompt_tokens=prompt,
            completion_tokens=completion,
            amount_nano=hold_amount_nano(prompt, completion, rates),
            created_ms=created,
            expires_ms=created + self._ttl_ms,
            budgeted=request.budgeted,
        )

    async def settle(self, hold: Hold, outcome: Outcome) -> None:
        """Resolve the hold from what was delivered; the store posts it at most once."""
        settlement = settlement_for(
            hold,
            status=outcome.status,
            usage=outcome.usage,
            output_bytes=outcome.output_bytes,
            now_ms=self._clock(),
        )
        if settlement.capped:
            log.warning(
                "settlement_capped",
                request_id=hold.request_id,
                account_id=hold.account_id,
                held_nano=hold.amount_nano,
            )
        finished = asyncio.get_running_loop().create_future()
        self._settling.add(finished)
        resolved = False
        try:
            resolved = await self._store.settle(settlement)
        finally:
            self._settling.discard(finished)
            finished.set_result(None)
            if self._observer is not None:
                self._observer.settled(settlement, resolved)
        if not resolved:  # already settled, or the reaper got there first: the first stands
            log.warning("hold_already_resolved", request_id=hold.request_id)

    async def _placed(self, hold: Hold) -> Placement:
        """Placing runs to completion even if the caller is cancelled meanwhile.

        A hold committed for a caller that has gone would otherwise stay open
        until the reaper posted it in full; instead it is voided at once.
        """
        placing = asyncio.ensure_future(self._store.place_hold(hold))
        try:
            return await asyncio.shield(placing)
        except asyncio.CancelledError:
            placing.add_done_callback(lambda done: self._void_if_placed(hold, done))
            raise

    def _void_if_placed(self, hold: Hold, done: asyncio.Future[Placement]) -> None:
        if done.cancelled() or done.exception() is not None or not done.result().placed:
            return
        task = asyncio.ensure_future(self._void(hold))
        self._voiding.add(task)
        task.add_done_callback(self._voiding.discard)

    async def _void(self, hold: Hold) -> None:
        try:
            await self._store.settle(void_settlement(hold, "client_gone", self._clock()))
        except Exception as exc:  # the reaper is the safety net; say so
            log.error("void_failed", request_id=hold.request_id, error=type(exc).__name__)


def _over_budget(hold: Hold, budget: BudgetUse) -> str:
    owner = "this key's" if budget.key_id is not None else "your account's"
    period = {"day": "daily", "month": "monthly", "lifetime": "lifetime"}[budget.period]
    return (
        f"Budget exceeded: this request needs {nano_to_usd(hold.amount_nano)} USD held "
        f"(its prompt and max_tokens at the model's price), but {owner} {period} budget of "
        f"{nano_to_usd(budget.limit_nano)} USD has {nano_to_usd(budget.remaining_nano)} USD "
        "left. Lower max_tokens, or wait for the next period."
    )
