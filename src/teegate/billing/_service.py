"""Billing as the gateway uses it: the meter, the reaper and the client-facing reads."""

from __future__ import annotations

from teegate.billing._meter import Clock, LedgerMeter, SettlementObserver, wall_ms
from teegate.billing._reaper import Reaper
from teegate.billing._records import (
    Balance,
    BudgetUse,
    LedgerStore,
    UsageQuery,
    UsageRecord,
)

MAX_USAGE_PAGE = 1000


class Billing:
    """One object for app wiring; each read is scoped to the caller's own account, and
    waits for this process's settlements under way (`LedgerMeter.settled`)."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        hold_ttl_s: float,
        reaper_interval_s: float,
        clock: Clock = wall_ms,
        observer: SettlementObserver | None = None,
        top_up_url: str = "/billing",
    ) -> None:
        """`observer` hears of every hold placed and settled, capped ones included (metrics);
        a 402 for want of credit names `top_up_url`."""
        self._store = store
        self.meter = LedgerMeter(
            store, hold_ttl_s=hold_ttl_s, clock=clock, observer=observer, top_up_url=top_up_url
        )
        self.reaper = Reaper(
            store,
            hold_ttl_s=hold_ttl_s,
            interval_s=reaper_interval_s,
            clock=clock,
            running_here=self.meter.is_live,
        )

    async def balance(self, account_id: int) -> Balance:
        await self.meter.settled()
        found = await self._store.balance(account_id)
        return found or Balance(account_id, 0, 0)

    async def usage(
        self, account_id: int, *, since_ms: int | None, limit: int
    ) -> list[UsageRecord]:
        await self.meter.settled()
        query = UsageQuery(
            limit=min(limit, MAX_USAGE_PAGE), account_id=account_id, since_ms=since_ms
        )
        return await self._store.usage(query)

    async def generation(self, account_id: int, request_id: str) -> UsageRecord | None:
        await self.meter.settled()
        return await self._store.generation(account_id, request_id)

    async def budgets(self, account_id: int, key_id: str) -> list[BudgetUse]:
        """The key's spend budgets and its account's, as they stand now."""
        await self.meter.settled()
        return await self._store.budgets(account_id, key_id, self.meter.now_ms())
