"""`LedgerStore`'s contract, on every implementation: the reference ledger in memory,
SQLite, PostgreSQL one write at a time, and PostgreSQL in batches.

The PostgreSQL variants skip, saying why, when TEEGATE_TEST_POSTGRES_URL is unset.
What only one engine has (its writer's threads, connections, lock order, WAL) is
tested in that engine's own file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from teegate.billing import (
    Balance,
    Billing,
    BudgetPeriod,
    BudgetUse,
    Hold,
    Placement,
    PriorHold,
    Rates,
    Renewal,
    UsageQuery,
    UsageRecord,
    cost_nano,
    expired_settlement,
    settlement_for,
)
from teegate.invariants import InvariantViolation
from teegate.store import AccountStore, Ledger, create_engine, upgrade
from tests.support.billing import LedgerState, database_url, ledger_state, postgres_url
from tests.support.ledger import NOW_MS, Batched, MemoryLedger, a_hold, by_usage

NO_POSTGRES = "set TEEGATE_TEST_POSTGRES_URL to run the ledger's contract on PostgreSQL"
IMPLEMENTATIONS = [
    "memory",
    "sqlite",
    pytest.param(
        "postgres-single", marks=pytest.mark.skipif(not postgres_url(), reason=NO_POSTGRES)
    ),
    pytest.param(
        "postgres-batch", marks=pytest.mark.skipif(not postgres_url(), reason=NO_POSTGRES)
    ),
]
ONE_NANO_A_TOKEN = Rates(1_000_000, 1_000_000)


@dataclass
class Books:
    """One implementation under test: its ledger, and its accounts and tables beside it."""

    ledger: MemoryLedger | Ledger | Batched
    memory: MemoryLedger | None = None
    accounts: AccountStore | None = None

    async def account(self, name: str, credit_nano: int = 0) -> int:
        if self.memory is not None:
            account_id = self.memory.create_account(name)
            if credit_nano:
                self.memory.credit(name, credit_nano)
            return account_id
        assert self.accounts is not None
        account = await self.accounts.create_account(name)
        if credit_nano:
            await self.accounts.credit(name, credit_nano)
        return account.id

    async def budget(
        self, account_id: int, key_id: str | None, period: BudgetPeriod, limit_nano: int
    ) -> None:
        if self.memory is not None:
            self.memory.set_budget(account_id, key_id, period, limit_nano)
            return
        assert self.accounts is not None
        [name] = [a.name for a in await self.accounts.list_accounts() if a.id == account_id]
        await self.accounts.set_budget(name, key_id, period, limit_nano)

    async def state(self, account_id: int) -> LedgerState:
        if self.memory is not None:
            return self.memory.state(account_id)
        assert self.accounts is not None
        return await ledger_state(self.accounts.engine, account_id)


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The implementation's name and a fresh database for it ('' for the reference)."""
    kind: str = request.param
    if kind == "memory":
        yield kind, ""
        return
    engine = "sqlite" if kind == "sqlite" else "postgresql"
    with database_url(engine, tmp_path) as url:
        yield kind, url


@pytest.fixture
async def books(implementation: tuple[str, str]) -> AsyncIterator[Books]:
    kind, url = implementation
    if kind == "memory":
        memory = MemoryLedger()
        yield Books(memory, memory=memory)
        return
    engine = create_engine(url)
    try:
        await upgrade(engine)
        ledger = Ledger(engine, max_batch=1) if kind == "postgres-single" else Ledger(engine)
        async with ledger.running():
            used = Batched(ledger) if kind == "postgres-batch" else ledger
            yield Books(used, accounts=AccountStore(engine))
    finally:
        await engine.dispose()


def sized_hold(account_id: int, request_id: str, amount_nano: int) -> Hold:
    """A hold of exactly `amount_nano` (one nano per prompt token)."""
    return replace(
        a_hold(account_id, request_id), rates=ONE_NANO_A_TOKEN, prompt_tokens=amount_nano,
        completion_tokens=0, amount_nano=amount_nano,
    )  # fmt: skip


async def checked(books: Books, account_id: int) -> LedgerState:
    """The account's books, which must keep the ledger's invariants."""
    state = await books.state(account_id)
    state.check()
    return state


# holds ------------------------------------------------------------------------------------


async def test_a_hold_then_its_settlement_posts_the_cost_and_releases_the_rest(
    books: Books,
) -> None:
    account = await books.account("acme", 10**9)
    hold = a_hold(account, "req_1")
    assert await books.ledger.place_hold(hold) == Placement(True, 10**9)
    assert await books.ledger.balance(account) == Balance(account, 10**9, hold.amount_nano)

    settlement = by_usage(hold, 40, 30)
    assert await books.ledger.settle(settlement) is True
    assert await books.ledger.balance(account) == Balance(account, 10**9 - settlement.cost_nano, 0)
    [record] = await books.ledger.usage(UsageQuery(limit=10, account_id=account))
    assert (record.request_id, record.prompt_tokens, record.completion_tokens) == ("req_1", 40, 30)
    assert (record.cost_nano, record.held_nano, record.settled_by) == (
        settlement.cost_nano,
        hold.amount_nano,
        "usage",
    )
    assert await books.ledger.generation(account, "req_1") == record
    await checked(books, account)


async def test_a_hold_that_does_not_fit_is_refused_and_changes_nothing(books: Books) -> None:
    hold_amount = a_hold(1, "probe").amount_nano
    account = await books.account("acme", hold_amount - 1)
    placement = await books.ledger.place_hold(a_hold(account, "req_1"))
    assert placement == Placement(False, hold_amount - 1)
    state = await checked(books, account)
    assert (state.held_nano, state.holds) == (0, 0)
    assert await books.ledger.place_hold(a_hold(account + 1, "req_2")) == Placement(False, 0)


async def test_concurrent_holds_each_get_what_one_at_a_time_would(books: Books) -> None:
    """In a batch or not: each account's holds in order, a refused one reporting what
    was left for it, and no account's holds deciding another's."""
    account = await books.account("acme", 20)
    broke = await books.account("broke")
    holds = [sized_hold(account, f"req_{i}", n) for i, n in enumerate([10, 100, 5, 6, 4])]
    placements = await asyncio.gather(
        *(books.ledger.place_hold(hold) for hold in holds),
        books.ledger.place_hold(sized_hold(broke, "req_broke", 1)),
        books.ledger.place_hold(sized_hold(broke + 1000, "req_nobody", 1)),  # no such account
    )
    assert [(p.placed, p.available_nano) for p in placements] == [
        (True, 20), (False, 10), (True, 10), (False, 5), (True, 5), (False, 0), (False, 0),
    ]  # fmt: skip
    state = await checked(books, account)
    assert (state.held_nano, state.open_holds) == (19, 3)


async def test_holds_never_overdraw_at_the_edge(books: Books) -> None:
    """Exactly the room for three: the fourth and later are refused, with what is left."""
    amount = a_hold(1, "probe").amount_nano
    account = await books.account("acme", 3 * amount + 7)
    placements = await asyncio.gather(
        *(books.ledger.place_hold(a_hold(account, f"req_{i}")) for i in range(6))
    )
    assert [p.placed for p in placements] == [True] * 3 + [False] * 3
    assert {p.available_nano for p in placements[3:]} == {7}
    await checked(books, account)


# settlements ------------------------------------------------------------------------------


async def test_settlement_is_exactly_once(books: Books) -> None:
    account = await books.account("acme", 10**9)
    hold = a_hold(account, "req_1")
    await books.ledger.place_hold(hold)
    first, again, expired = (
        by_usage(hold, 40, 30),
        by_usage(hold, 50, 100),
        expired_settlement(hold, NOW_MS + 10**9),
    )
    results = list(
        await asyncio.gather(
            books.ledger.settle(first), books.ledger.settle(again), books.ledger.settle(expired)
        )
    )
    assert results == [True, False, False]  # the first to arrive claims it
    state = await checked(books, account)
    assert (state.usage_records, state.open_holds, state.debits_nano) == (1, 0, first.cost_nano)
    assert await books.ledger.settle(first) is False  # and later too: idempotent


async def test_a_request_settled_twice_at_once_is_claimed_by_the_first(books: Books) -> None:
    account = await books.account("acme", 10**9)
    early, late = a_hold(account, "req_early"), a_hold(account, "req_late")
    for hold in (early, late):
        await books.ledger.place_hold(hold)
    reaped = expired_settlement(early, NOW_MS + 10**9)
    used = by_usage(late, 40, 30)
    results = list(await asyncio.gather(
        books.ledger.settle(reaped), books.ledger.settle(by_usage(early, 40, 30)),
        books.ledger.settle(used), books.ledger.settle(expired_settlement(late, NOW_MS + 10**9)),
    ))  # fmt: skip
    assert results == [True, False, True, False]
    state = await checked(books, account)
    assert (state.usage_records, state.open_holds, state.held_nano) == (2, 0, 0)
    assert state.debits_nano == reaped.cost_nano + used.cost_nano


async def test_a_zero_cost_settlement_voids_without_an_entry(books: Books) -> None:
    account = await books.account("acme", 10**9)
    hold = a_hold(account, "req_1")
    await books.ledger.place_hold(hold)
    void = settlement_for(hold, status="upstream_error", usage=None, output_bytes=0, now_ms=NOW_MS)
    assert (void.cost_nano, void.settled_by, void.hold_state) == (0, "void", "voided")
    assert await books.ledger.settle(void) is True
    state = await checked(books, account)
    assert (state.balance_nano, state.debits_nano, state.usage_records) == (10**9, 0, 1)


async def test_a_settlement_that_does_not_match_its_hold_changes_nothing(books: Books) -> None:
    account = await books.account("acme", 10**9)
    hold = a_hold(account, "req_1")
    await books.ledger.place_hold(hold)
    other = a_hold(account, "req_1", completion=7)  # same id, another amount
    with pytest.raises(InvariantViolation, match="does not match its hold"):
        await books.ledger.settle(by_usage(other, 1, 1))
    state = await books.state(account)
    assert (state.open_holds, state.usage_records, state.held_nano) == (1, 0, hold.amount_nano)
    assert await books.ledger.settle(by_usage(hold, 1, 1)) is True  # the real one still settles
    assert await books.ledger.settle(by_usage(other, 1, 1)) is False  # nothing open: no check
    unknown = a_hold(account, "req_unknown")
    assert await books.ledger.settle(expired_settlement(unknown, 0)) is False
    await checked(books, account)


async def test_a_mismatched_settlement_fails_alone(books: Books) -> None:
    account = await books.account("acme", 10**9)
    holds = [a_hold(account, f"req_{i}") for i in range(3)]
    for hold in holds:
        await books.ledger.place_hold(hold)
    wrong = a_hold(account, "req_0", completion=7)  # req_0's id, another amount
    results = await asyncio.gather(
        books.ledger.settle(by_usage(wrong, 1, 1)),
        *(books.ledger.settle(by_usage(hold, 1, 1)) for hold in holds),
        return_exceptions=True,
    )
    assert isinstance(results[0], InvariantViolation)
    assert results[1:] == [True, True, True]
    state = await checked(books, account)
    assert (state.usage_records, state.open_holds) == (3, 0)


async def test_every_field_of_a_hold_and_its_usage_record_reads_back(books: Books) -> None:
    account = await books.account("acme", 10**12)
    hold = replace(
        a_hold(account, "req_cols", completion=321),
        key_id="key_cols", model="m/cols-TEE", stream=True,
    )  # fmt: skip
    settlement = replace(by_usage(hold, 17, 19), status="client_gone", capped=True)
    await books.ledger.place_hold(hold)
    assert await books.ledger.open_holds(account) == [hold]
    assert await books.ledger.settle(settlement) is True
    assert await books.ledger.open_holds(account) == []
    assert await books.ledger.generation(account, "req_cols") == UsageRecord(
        request_id="req_cols", account_id=account, account="acme", key_id="key_cols",
        model="m/cols-TEE", stream=True, prompt_tokens=17, completion_tokens=19,
        cost_nano=settlement.cost_nano, held_nano=hold.amount_nano, settled_by="usage",
        status="client_gone", capped=True, started_ms=hold.created_ms,
        settled_ms=settlement.settled_ms,
    )  # fmt: skip
    state = await checked(books, account)
    assert state.debits_nano == settlement.cost_nano > 0


# the reaper -------------------------------------------------------------------------------


async def test_the_reaper_charges_lapsed_leases_their_checkpoint_once(books: Books) -> None:
    account = await books.account("acme", 10**10)
    stale = a_hold(account, "req_stale", created=NOW_MS - 120_000)  # lapsed a minute ago
    old = a_hold(account, "req_old", created=NOW_MS - 20_000, ttl_ms=3_600_000)  # > TTL now
    fresh = a_hold(account, "req_fresh", created=NOW_MS - 1_000)
    for hold in (stale, old, fresh):
        await books.ledger.place_hold(hold)
    # the stale hold's process checkpointed 20 bytes, then died
    await books.ledger.renew_holds([Renewal("req_stale", 20)], NOW_MS - 119_000, NOW_MS - 59_000)
    stale = replace(stale, expires_ms=NOW_MS - 59_000, output_bytes=20)
    assert await books.ledger.expired_holds(NOW_MS, 10_000, 10) == [stale, old]
    assert await books.ledger.expired_holds(NOW_MS, 10_000, 1) == [stale]
    billing = Billing(books.ledger, hold_ttl_s=10, reaper_interval_s=1, clock=lambda: NOW_MS)
    assert await billing.reaper.reap_once() == 2
    assert await billing.reaper.reap_once() == 0
    state = await checked(books, account)
    charged = cost_nano(stale.prompt_tokens, 10, stale.rates)
    assert state.debits_nano == charged < stale.amount_nano  # `old` delivered nothing
    assert [h.request_id for h in await books.ledger.open_holds(account)] == ["req_fresh"]
    record = await books.ledger.generation(account, "req_stale")
    assert record is not None
    assert (record.settled_by, record.status, record.cost_nano, record.completion_tokens) == (
        "expired-hold",
        "expired",
        charged,
        10,
    )
    nothing = await books.ledger.generation(account, "req_old")
    assert nothing is not None and (nothing.cost_nano, nothing.settled_by) == (0, "expired-hold")
    assert await books.ledger.settle(by_usage(stale, 1, 1)) is False  # too late: it stands


async def test_a_renewed_lease_keeps_its_hold_from_the_reaper(books: Books) -> None:
    """Issue 18, finding 2: a hold older than the TTL was reaped while its request ran."""
    account = await books.account("acme", 10**10)
    long_stream = a_hold(account, "req_long", created=NOW_MS - 3_600_000, ttl_ms=10_000)
    done = a_hold(account, "req_done", created=NOW_MS - 5_000, ttl_ms=10_000)
    for hold in (long_stream, done):
        await books.ledger.place_hold(hold)
    assert await books.ledger.settle(by_usage(done, 1, 1))
    renewals = [Renewal("req_long", 5_000), Renewal("req_done", 7), Renewal("req_none", 1)]
    await books.ledger.renew_holds(renewals, NOW_MS - 1_000, NOW_MS + 9_000)
    assert await books.ledger.expired_holds(NOW_MS, 10_000, 10) == []
    [live] = await books.ledger.open_holds(account)
    assert (live.request_id, live.expires_ms, live.output_bytes) == (
        "req_long",
        NOW_MS + 9_000,
        5_000,
    )
    # unrenewed for longer than the TTL now (its process died): lapsed, even before expiry
    assert await books.ledger.expired_holds(NOW_MS + 9_000, 10_000, 10) == [live]
    await books.ledger.renew_holds([], NOW_MS, NOW_MS + 10_000)  # nothing to renew: no write
    await checked(books, account)


# idempotency keys -------------------------------------------------------------------------


def with_key(hold: Hold, key: str = "a" * 64, body: str = "b" * 64) -> Hold:
    return replace(hold, idempotency_key=key, fingerprint=body)


async def test_an_idempotency_key_is_held_once_per_account(books: Books) -> None:
    account = await books.account("acme", 10**10)
    other = await books.account("beta", 10**10)
    first = with_key(a_hold(account, "req_1"))
    assert (await books.ledger.place_hold(first)).placed
    again = await books.ledger.place_hold(with_key(a_hold(account, "req_2")))
    assert not again.placed and again.prior == PriorHold("req_1", "open", True)
    changed = await books.ledger.place_hold(with_key(a_hold(account, "req_3"), body="c" * 64))
    assert changed.prior == PriorHold("req_1", "open", False)
    assert (await books.ledger.place_hold(with_key(a_hold(other, "req_4")))).placed
    assert (await books.ledger.place_hold(a_hold(account, "req_5"))).placed  # no key
    assert await books.ledger.settle(by_usage(first, 5, 5))
    after = await books.ledger.place_hold(with_key(a_hold(account, "req_6")))
    assert after.prior == PriorHold("req_1", "posted", True)
    state = await checked(books, account)
    assert (state.holds, state.open_holds) == (2, 1)


async def test_a_voided_keys_retry_is_held_and_the_same_key_at_once_holds_once(
    books: Books,
) -> None:
    account = await books.account("acme", 10**10)
    first = with_key(a_hold(account, "req_1"))
    assert (await books.ledger.place_hold(first)).placed
    void = settlement_for(first, status="upstream_error", usage=None, output_bytes=0, now_ms=NOW_MS)
    assert await books.ledger.settle(void)
    retry = with_key(a_hold(account, "req_2"))
    assert (await books.ledger.place_hold(retry)).placed
    racing = [with_key(a_hold(account, f"req_r{i}"), key="d" * 64) for i in range(8)]
    placements = await asyncio.gather(*(books.ledger.place_hold(h) for h in racing))
    assert sum(p.placed for p in placements) == 1
    winner = next(h.request_id for h, p in zip(racing, placements, strict=True) if p.placed)
    assert {p.prior for p in placements if not p.placed} == {PriorHold(winner, "open", True)}
    state = await checked(books, account)
    assert state.open_holds == 2


# reads --------------------------------------------------------------------------------------


async def test_usage_reads_are_scoped_and_filtered(books: Books) -> None:
    acme, beta = await books.account("acme", 10**10), await books.account("beta", 10**10)
    for account, request_id, created in [(acme, "a1", NOW_MS), (acme, "a2", NOW_MS + 10),
                                         (beta, "b1", NOW_MS + 5)]:  # fmt: skip
        hold = a_hold(account, request_id, created=created)
        await books.ledger.place_hold(hold)
        await books.ledger.settle(replace(by_usage(hold, 1, 1), settled_ms=created + 1))
    newest_first = await books.ledger.usage(UsageQuery(limit=10, account_id=acme))
    assert [r.request_id for r in newest_first] == ["a2", "a1"]
    by_name = await books.ledger.usage(UsageQuery(limit=10, account_name="beta"))
    assert [r.request_id for r in by_name] == ["b1"]
    since = await books.ledger.usage(UsageQuery(limit=10, since_ms=NOW_MS + 5))
    assert [r.request_id for r in since] == ["a2", "b1"]
    assert [r.request_id for r in await books.ledger.usage(UsageQuery(limit=2))] == ["a2", "b1"]
    assert await books.ledger.generation(beta, "a1") is None  # another account's id: not found
    assert await books.ledger.balance(beta + 1000) is None


# spend budgets ------------------------------------------------------------------------------

DAY_MS = 86_400_000


def budgeted(hold: Hold, key_id: str = "key_1") -> Hold:
    return replace(hold, key_id=key_id, budgeted=True)


async def test_a_budget_admits_exactly_what_it_can_hold_at_once(books: Books) -> None:
    amount = a_hold(1, "probe").amount_nano
    account = await books.account("acme", 10**12)
    await books.budget(account, "key_1", "day", 3 * amount + 7)
    placements = await asyncio.gather(
        *(books.ledger.place_hold(budgeted(a_hold(account, f"req_{i}"))) for i in range(30))
    )
    assert sum(p.placed for p in placements) == 3
    refusal = BudgetUse("key_1", "day", 3 * amount + 7, 0, 3 * amount)
    assert {p.over_budget for p in placements if not p.placed} == {refusal}
    assert refusal.remaining_nano == 7
    state = await checked(books, account)
    assert (state.held_nano, state.open_holds) == (3 * amount, 3)
    assert await books.ledger.budgets(account, "key_1", NOW_MS) == [refusal]
    assert await books.ledger.budgets(account, "key_2", NOW_MS) == []


async def test_a_settlement_moves_its_cost_to_spent_and_frees_the_rest(books: Books) -> None:
    amount = a_hold(1, "probe").amount_nano
    account = await books.account("acme", 10**12)
    await books.budget(account, "key_1", "month", 2 * amount + amount // 2)
    first, second, third = (budgeted(a_hold(account, f"req_{i}")) for i in range(3))
    assert (await books.ledger.place_hold(first)).placed
    assert (await books.ledger.place_hold(second)).placed
    assert not (await books.ledger.place_hold(third)).placed
    settlement = by_usage(first, 10, 10)
    assert settlement.cost_nano < amount // 2
    assert await books.ledger.settle(settlement)
    assert not await books.ledger.settle(settlement)  # exactly once, budgets included
    [use] = await books.ledger.budgets(account, "key_1", NOW_MS)
    assert (use.spent_nano, use.held_nano) == (settlement.cost_nano, amount)
    assert (await books.ledger.place_hold(third)).placed  # what the first did not use
    await checked(books, account)


async def test_an_account_budget_counts_every_key_and_names_itself(books: Books) -> None:
    amount = a_hold(1, "probe").amount_nano
    account = await books.account("acme", 10**12)
    await books.budget(account, None, "lifetime", 2 * amount)
    await books.budget(account, "key_1", "day", 10 * amount)
    holds = [budgeted(a_hold(account, f"req_{i}"), f"key_{i % 2 + 1}") for i in range(4)]
    placements = [await books.ledger.place_hold(hold) for hold in holds]
    assert [p.placed for p in placements] == [True, True, False, False]
    over = placements[2].over_budget
    assert over is not None
    assert (over.key_id, over.period, over.held_nano) == (None, "lifetime", 2 * amount)
    assert [(u.key_id, u.period) for u in await books.ledger.budgets(account, "key_1", NOW_MS)] == [
        ("key_1", "day"),
        (None, "lifetime"),
    ]


async def test_a_new_day_counts_spent_from_zero_and_a_lifetime_never_does(books: Books) -> None:
    amount = a_hold(1, "probe").amount_nano
    account = await books.account("acme", 10**12)
    await books.budget(account, "key_1", "day", amount)
    await books.budget(account, "key_2", "lifetime", amount)
    for key_id in ("key_1", "key_2"):
        hold = budgeted(a_hold(account, f"req_{key_id}"), key_id)
        assert (await books.ledger.place_hold(hold)).placed
        assert await books.ledger.settle(by_usage(hold, 50, 100))  # the whole hold
    tomorrow = NOW_MS + DAY_MS
    again = budgeted(a_hold(account, "req_tomorrow_1", created=tomorrow), "key_1")
    assert (await books.ledger.place_hold(again)).placed
    never = budgeted(a_hold(account, "req_tomorrow_2", created=tomorrow), "key_2")
    assert not (await books.ledger.place_hold(never)).placed
    [day] = await books.ledger.budgets(account, "key_1", tomorrow)
    assert (day.spent_nano, day.held_nano) == (0, amount)
    [yesterday] = await books.ledger.budgets(account, "key_2", NOW_MS)
    assert yesterday.spent_nano == amount


async def test_a_hold_placed_without_its_budget_flag_moves_no_budget(books: Books) -> None:
    amount = a_hold(1, "probe").amount_nano
    account = await books.account("acme", 10**12)
    await books.budget(account, "key_1", "day", amount - 1)
    plain = a_hold(account, "req_1")
    assert (await books.ledger.place_hold(plain)).placed
    assert await books.ledger.budgets(account, "key_1", NOW_MS) == [
        BudgetUse("key_1", "day", amount - 1, 0, 0)
    ]


async def test_the_reaper_settles_a_budgeted_hold_into_its_budget(books: Books) -> None:
    amount = a_hold(1, "probe").amount_nano
    account = await books.account("acme", 10**12)
    await books.budget(account, "key_1", "day", 5 * amount)
    stale = budgeted(a_hold(account, "req_stale", created=NOW_MS - 120_000))
    assert (await books.ledger.place_hold(stale)).placed
    delivered = 2 * stale.completion_tokens  # its checkpoint: the whole completion
    await books.ledger.renew_holds([Renewal("req_stale", delivered)], NOW_MS - 119_000, NOW_MS - 1)
    stale = replace(stale, expires_ms=NOW_MS - 1, output_bytes=delivered)
    assert await books.ledger.expired_holds(NOW_MS, 10_000, 10) == [stale]
    billing = Billing(books.ledger, hold_ttl_s=10, reaper_interval_s=1, clock=lambda: NOW_MS)
    assert await billing.reaper.reap_once() == 1
    [use] = await billing.budgets(account, "key_1")
    assert (use.spent_nano, use.held_nano) == (amount, 0)
    await checked(books, account)
