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
from teegate.billing._pricing import Rates, cost_nano
from teegate.billing._records import (
    BudgetUse,
    Hold,
    LedgerStore,
    Placement,
    PriorHold,
    Renewal,
    Settlement,
)
from teegate.billing._settle import settlement_for, void_settlement
from teegate.errors import (
    BudgetExceeded,
    IdempotencyConflict,
    IdempotencyKeyReused,
    InsufficientBalance,
    ServiceUnavailable,
    TeegateError,
)
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
    idempotency_key: str | None = None
    """SHA-256 (hex) of the client's Idempotency-Key, and of its request body."""
    fingerprint: str | None = None
    prompt_limit: int | None = None
    """The model's context length: no prompt the upstream reads is longer, so the
    estimate (16,384 tokens an image) never holds more than that."""

    def prompt_bound(self) -> int:
        """The prompt tokens held: the service's own bound, or the body's estimate
        within the model's context."""
        if self.prompt_tokens is not None:
            return self.prompt_tokens
        bound = prompt_upper_bound(self.body)
        return bound if self.prompt_limit is None else min(bound, self.prompt_limit)


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
    """Holds a conservative estimate per request, then settles the actual cost.

    A hold is leased: while its request runs, this process renews it (one batched
    write per `renew_ms` for every live hold, with each one's delivered output as a
    checkpoint), so only a hold whose process died is ever reaped. A settlement the
    database could not take (an outage after the answer was sent) waits here, its
    lease still renewed, and is retried with backoff until the database takes it,
    at the real usage; so is the void of a hold whose placement's outcome was lost.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        hold_ttl_s: float,
        clock: Clock = wall_ms,
        observer: SettlementObserver | None = None,
        top_up_url: str = "/billing",
    ) -> None:
        """`top_up_url`: where a 402 sends the user to add credit (the billing page at
        the gateway's public address, when the operator configured one)."""
        self._store = store
        self._observer = observer
        self._top_up_url = top_up_url
        self._ttl_ms = seconds_to_ms(hold_ttl_s)
        self.renew_ms = max(1, self._ttl_ms // RENEWALS_PER_LEASE)
        """How often live holds are renewed: several times per lease, so one late or
        failed renewal never lets a live hold lapse."""
        self._clock = clock
        self._voiding: set[asyncio.Task[None]] = set()
        self._settling: set[asyncio.Future[None]] = set()
        self._live: dict[str, _Lease] = {}
        self._pending: dict[str, Settlement] = {}
        self._retry_wake = asyncio.Event()

    @property
    def live_holds(self) -> int:
        return len(self._live)

    def is_live(self, request_id: str) -> bool:
        """This process runs the request, or holds its settlement for a retry."""
        return request_id in self._live

    @property
    def pending_settlements(self) -> int:
        """Settlements waiting for the database to take them (a gauge for operators)."""
        return len(self._pending)

    async def settled(self) -> None:
        """Wait for the settlements under way now. An answer is settled after it is
        sent, so a client that reads its balance or usage right after its answer would
        otherwise find that answer not charged yet."""
        if self._settling or self._voiding:
            await asyncio.wait([*self._settling, *self._voiding])

    async def place(self, request: HoldRequest) -> Hold:
        """Place the hold or refuse with 402 (409/422 for a reused Idempotency-Key);
        nothing has gone upstream either way."""
        hold = self.hold_for(request)
        invariant(hold.amount_nano >= 0, f"hold {hold.request_id}: negative amount")
        try:
            placement = await self._placed(hold)
        except ServiceUnavailable:
            # The COMMIT may have happened without its answer reaching us: the hold is
            # voided once the database answers, so a hold that exists costs nothing.
            self._defer(void_settlement(hold, "refused", self._clock()))
            raise
        if placement.prior is not None:
            raise _idempotency_error(placement.prior)
        if not placement.placed and placement.over_budget is not None:
            raise BudgetExceeded(_over_budget(hold, placement.over_budget))
        if not placement.placed:
            generates = hold.completion_tokens > 0
            raise InsufficientBalance(
                f"Insufficient balance: this request needs {nano_to_usd(hold.amount_nano)} USD "
                f"held against your balance ({_HELD_FOR[generates]} at the model's price), "
                f"but {nano_to_usd(max(placement.available_nano, 0))} USD is available. "
                f"Add credit or {_LOWER[generates]}. Top up at {self._top_up_url}."
            )
        self._live[hold.request_id] = _Lease()
        if self._observer is not None:
            self._observer.placed(hold)
        return hold

    def now_ms(self) -> int:
        return self._clock()

    def hold_for(self, request: HoldRequest) -> Hold:
        """The hold a request needs, at the rates it was admitted at."""
        rates = request.rates
        prompt = request.prompt_bound()
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
            idempotency_key=request.idempotency_key,
            fingerprint=request.fingerprint,
        )

    def watch(self, hold: Hold, outcome: Outcome) -> None:
        """Checkpoint `outcome`'s delivered output with each renewal of the hold's lease."""
        lease = self._live.get(hold.request_id)
        if lease is not None:
            lease.outcome = outcome

    async def settle(self, hold: Hold, outcome: Outcome) -> Settlement | None:
        """Resolve the hold from what was delivered; the store posts it at most once.
        If the database is down, the settlement waits in memory and is retried.
        The settlement posted or waiting to be (what a receipt says was charged), or
        None if the hold was resolved before."""
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
                model=hold.model,
                held_nano=hold.amount_nano,
                cost_nano=cost_nano(
                    settlement.prompt_tokens, settlement.completion_tokens, hold.rates
                ),
            )
        finished = asyncio.get_running_loop().create_future()
        self._settling.add(finished)
        try:
            resolved = await self._store.settle(settlement)
        except ServiceUnavailable:
            self._defer(settlement)
            self._observe(settlement, True)  # posted as it is once the database is back
            return settlement
        except BaseException:  # not an outage: the lease lapses, and the reaper settles it
            self._live.pop(hold.request_id, None)
            self._observe(settlement, False)
            raise
        finally:
            self._settling.discard(finished)
            finished.set_result(None)
        self._live.pop(hold.request_id, None)
        self._observe(settlement, resolved)
        if not resolved:  # already settled, or the reaper got there first: the first stands
            log.warning("hold_already_resolved", request_id=hold.request_id)
            return None
        return settlement

    def _observe(self, settlement: Settlement, resolved: bool) -> None:
        if self._observer is not None:
            self._observer.settled(settlement, resolved)

    async def run(self) -> None:
        """Renew live holds' leases and retry deferred settlements until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._renew_forever())
            tasks.create_task(self._retry_forever())

    async def renew_once(self) -> int:
        """Renew every live hold's lease, checkpointing its output; how many."""
        now = self._clock()
        renewals = [
            Renewal(request_id, lease.output_bytes()) for request_id, lease in self._live.items()
        ]
        for start in range(0, len(renewals), RENEW_BATCH):
            await self._store.renew_holds(
                renewals[start : start + RENEW_BATCH], now, now + self._ttl_ms
            )
        return len(renewals)

    async def retry_once(self) -> int:
        """Retry each deferred settlement once, oldest first; how many the database took.
        Stops at the first outage: the rest wait for the next try."""
        done = 0
        for request_id, settlement in list(self._pending.items()):
            try:
                resolved = await self._store.settle(settlement)
            except ServiceUnavailable:
                break
            except Exception as exc:  # not an outage: retrying cannot help; the reaper will
                resolved = False
                log.error("settle_retry_failed", request_id=request_id, error=type(exc).__name__)
            del self._pending[request_id]
            self._live.pop(request_id, None)
            done += 1
            log.info(
                "settlement_retried",
                request_id=request_id,
                resolved=resolved,
                cost_nano=settlement.cost_nano,
            )
        return done

    def _defer(self, settlement: Settlement) -> None:
        hold = settlement.hold
        self._pending[hold.request_id] = settlement
        self._live.setdefault(hold.request_id, _Lease())  # renewed until it is taken
        self._retry_wake.set()
        log.error("settle_deferred", request_id=hold.request_id, account_id=hold.account_id)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_ms / 1000)
            try:
                await self.renew_once()
            except Exception as exc:  # the next round renews them; leases outlast several
                log.error("renew_failed", holds=len(self._live), error=type(exc).__name__)

    async def _retry_forever(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            if not self._pending:
                self._retry_wake.clear()
                await self._retry_wake.wait()
                delay = RETRY_FIRST_S
            await asyncio.sleep(delay)
            try:
                await self.retry_once()
            except Exception as exc:
                log.error("settle_retry_failed", error=type(exc).__name__)
            delay = min(delay * 2, max(self.renew_ms / 1000, RETRY_FIRST_S))

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
        except ServiceUnavailable:
            self._defer(void_settlement(hold, "client_gone", self._clock()))
        except Exception as exc:  # the reaper is the safety net; say so
            log.error("void_failed", request_id=hold.request_id, error=type(exc).__name__)


RENEWALS_PER_LEASE = 4
RENEW_BATCH = 1000
"""Holds renewed per write: 10,000 open streams are ten writes per renewal period."""
RETRY_FIRST_S = 0.5
"""The first retry of a deferred settlement; each next one waits twice as long, up
to the renewal period."""


@dataclass(slots=True)
class _Lease:
    """A live hold: what its answer has delivered so far, once the answer is watched."""

    outcome: Outcome | None = None

    def output_bytes(self) -> int:
        return 0 if self.outcome is None else self.outcome.output_bytes


def _idempotency_error(prior: PriorHold) -> TeegateError:
    if not prior.same_body:
        return IdempotencyKeyReused(
            f"This Idempotency-Key was used by request {prior.request_id} with a different "
            "body: use a new key for a new request."
        )
    if prior.state == "open":
        return IdempotencyConflict(
            f"A request with this Idempotency-Key ({prior.request_id}) is still running: "
            "it is not charged twice. Retry after it has finished.",
            finished=False,
        )
    return IdempotencyConflict(
        f"This Idempotency-Key was used by request {prior.request_id}, which has "
        "finished and is not charged again. Completions are never stored, so it cannot "
        f"be replayed: its charge is at GET /v1/generation?id={prior.request_id}.",
        finished=True,
    )


def _over_budget(hold: Hold, budget: BudgetUse) -> str:
    owner = "this key's" if budget.key_id is not None else "your account's"
    period = {"day": "daily", "month": "monthly", "lifetime": "lifetime"}[budget.period]
    return (
        f"Budget exceeded: this request needs {nano_to_usd(hold.amount_nano)} USD held "
        f"(its prompt and max_tokens at the model's price), but {owner} {period} budget of "
        f"{nano_to_usd(budget.limit_nano)} USD has {nano_to_usd(budget.remaining_nano)} USD "
        "left. Lower max_tokens, or wait for the next period."
    )
