"""The reaper: no hold outlives its lease, even if the gateway that placed it died.

A live hold's lease is renewed by the process running its request
(`LedgerMeter`), so a hold whose lease lapsed has lost its process. It is settled
from its last progress checkpoint (`expired_settlement`): the prompt estimate
plus the output its request had delivered, or nothing if it had delivered
nothing; never more than the hold. A hold counts as lapsed at its own
`expires_ms`, or once it was placed or last renewed longer ago than the TTL
configured now, so an operator who lowers `hold_ttl_s` after a crash clears the
stranded holds at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from teegate.billing._meter import Clock, seconds_to_ms, wall_ms
from teegate.billing._records import LedgerStore
from teegate.billing._settle import expired_settlement

log = structlog.get_logger("teegate.billing")

REAP_BATCH = 256
"""Holds settled per round; the group commit turns a round into a few transactions."""

MAX_ROUNDS = 100
"""Rounds per pass, so one pass is bounded; the next pass picks up the rest."""


class Reaper:
    def __init__(
        self,
        store: LedgerStore,
        *,
        hold_ttl_s: float,
        interval_s: float,
        clock: Clock = wall_ms,
        running_here: Callable[[str], bool] = lambda request_id: False,
    ) -> None:
        """`running_here` says whether this process still runs a request: its hold is
        not reaped even if its lease lapsed in the database (an outage longer than the
        lease, during which the renewals could not be written)."""
        self._store = store
        self._running_here = running_here
        self._ttl_ms = seconds_to_ms(hold_ttl_s)
        self._interval_s = interval_s
        self._clock = clock

    async def reap_once(self) -> int:
        """Settle every expired open hold; returns how many this pass resolved."""
        reaped = 0
        for _ in range(MAX_ROUNDS):
            now = self._clock()
            found = await self._store.expired_holds(now, self._ttl_ms, REAP_BATCH)
            holds = [hold for hold in found if not self._running_here(hold.request_id)]
            results = await asyncio.gather(
                *(self._store.settle(expired_settlement(hold, now)) for hold in holds)
            )
            for hold, resolved in zip(holds, results, strict=True):
                if resolved:
                    log.warning(
                        "hold_expired",
                        request_id=hold.request_id,
                        account_id=hold.account_id,
                        amount_nano=hold.amount_nano,
                        output_bytes=hold.output_bytes,
                    )
            reaped += sum(results)
            if len(found) < REAP_BATCH or not holds:
                break
        return reaped

    async def run(self) -> None:
        """Reap every `interval_s` until cancelled; a failed pass is logged and retried."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.reap_once()
            except Exception as exc:
                log.error("reap_failed", error=type(exc).__name__)
