"""The reference ledger (`MemoryLedger`): `teegate.billing.LedgerStore`'s rules in plain
Python; and the holds and settlements the ledger tests build, the model they price
(`MODEL`), and the wrappers and fakes around ledgers that several test files share
(`Batched`, `FakeStore`, `Unopenable`).

Every implementation (SQLite, PostgreSQL one write at a time, PostgreSQL in
batches) must keep the same books as this one, which applies each write alone,
in the order it is called, with nothing shared and nothing to tune. The contract
suite and the differential test run it beside the SQL ledgers; the meter's tests
use it as their store.

It keeps what the tables keep: accounts with balance and held amounts, every hold
with its state, the ledger's entries, the usage records and the spend budgets.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import (
    Balance,
    BudgetPeriod,
    BudgetUse,
    Hold,
    HoldState,
    LedgerStore,
    Placement,
    PriorHold,
    Rates,
    Renewal,
    Settlement,
    UsageQuery,
    UsageRecord,
    cost_nano,
    expired_settlement,
    period_start,
    settlement_for,
)
from teegate.catalog import parse_entry
from teegate.errors import ServiceUnavailable
from teegate.invariants import invariant
from teegate.store import AccountStore, Ledger
from teegate.store.sqlite import connect_sqlite
from tests.support.billing import LedgerState

RATES = Rates(740_000_000, 3_237_500_000)  # R1's sample prices x 1.85
NOW_MS = 1_800_000_000_000
MODEL = parse_entry(
    {"id": "deepseek-ai/DeepSeek-R1-0528-TEE", "pricing": {"prompt": "0.4", "completion": "1.75"},
     "context_length": 163840, "confidential_compute": True},
    upstream="devstack", markup=Decimal("1.85"),
)  # fmt: skip


def a_hold(
    account_id: int,
    request_id: str,
    *,
    completion: int = 100,
    created: int = NOW_MS,
    ttl_ms: int = 60_000,
) -> Hold:
    prompt = 50
    return Hold(
        request_id=request_id, account_id=account_id, key_id="key_1", model="m/x-TEE",
        stream=False, rates=RATES, prompt_tokens=prompt, completion_tokens=completion,
        amount_nano=cost_nano(prompt, completion, RATES), created_ms=created,
        expires_ms=created + ttl_ms,
    )  # fmt: skip


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def by_usage(hold: Hold, prompt: int, completion: int) -> Settlement:
    """The settlement of a request that reported its usage."""
    return settlement_for(
        hold, status="ok", usage=Usage(prompt, completion), output_bytes=0, now_ms=NOW_MS + 5
    )


async def funded(engine: AsyncEngine, name: str, nano: int) -> int:
    """A new account on `engine` with `nano` of credit; its id."""
    store = AccountStore(engine)
    account = await store.create_account(name)
    if nano:
        await store.credit(name, nano)
    return account.id


@dataclass
class MemoryBudget:
    """One row of `budgets`: spent counts from `period_start_ms`, held is every open
    budgeted hold of its key (or account)."""

    limit_nano: int
    period_start_ms: int = 0
    spent_nano: int = 0
    held_nano: int = 0

    def spent_in(self, period: BudgetPeriod, now_ms: int) -> int:
        return 0 if self.period_start_ms < period_start(period, now_ms) else self.spent_nano

    def move_to(self, period: BudgetPeriod, now_ms: int) -> None:
        self.spent_nano = self.spent_in(period, now_ms)
        self.period_start_ms = max(self.period_start_ms, period_start(period, now_ms))


@dataclass
class MemoryAccount:
    id: int
    name: str
    balance_nano: int = 0
    held_nano: int = 0


@dataclass
class HoldRow:
    """A hold as the `holds` table keeps it: the hold, its state and when it resolved."""

    hold: Hold
    state: HoldState = "open"
    resolved_ms: int | None = None
    renewed_ms: int | None = None


@dataclass(frozen=True)
class Entry:
    """One row of `ledger_entries`: a credit (positive) or a debit (negative)."""

    account_id: int
    kind: str
    amount_nano: int
    reference: str | None
    memo: str


class DuplicateRow(ValueError):
    """What the tables' unique keys refuse (a hold id, or a debit's reference, taken)."""


class MemoryLedger:
    """A `LedgerStore`, plus the accounts' side (create, credit) the SQL ledger leaves to
    `AccountStore`. A write that fails changes nothing, as a rolled-back transaction."""

    def __init__(self) -> None:
        self.accounts: dict[int, MemoryAccount] = {}
        self.hold_rows: dict[str, HoldRow] = {}
        self.entries: list[Entry] = []
        self.usage_records: dict[str, UsageRecord] = {}
        self.settled: list[Settlement] = []
        """Every settlement that resolved a hold, in order."""
        self.budget_rows: dict[tuple[int, str, BudgetPeriod], MemoryBudget] = {}
        """By account, key ('' for the account's own) and period."""

    # the accounts' side -------------------------------------------------------------

    def create_account(self, name: str) -> int:
        invariant(all(a.name != name for a in self.accounts.values()), f"{name} exists")
        account = MemoryAccount(len(self.accounts) + 1, name)
        self.accounts[account.id] = account
        return account.id

    def credit(self, name: str, amount_nano: int, *, memo: str = "credit") -> None:
        if amount_nano <= 0:
            raise ValueError("a credit must be positive")
        [account] = [a for a in self.accounts.values() if a.name == name]
        self.entries.append(Entry(account.id, "credit", amount_nano, None, memo))
        account.balance_nano += amount_nano

    def set_budget(
        self, account_id: int, key_id: str | None, period: BudgetPeriod, limit_nano: int
    ) -> None:
        key = (account_id, key_id or "", period)
        row = self.budget_rows.get(key)
        if row is None:
            self.budget_rows[key] = MemoryBudget(limit_nano)
        else:
            row.limit_nano = limit_nano

    def _budgets_of(self, hold: Hold) -> list[tuple[str, BudgetPeriod, MemoryBudget]]:
        return sorted(
            (
                (key_id, period, row)
                for (account_id, key_id, period), row in self.budget_rows.items()
                if account_id == hold.account_id and key_id in ("", hold.key_id)
            ),
            key=lambda found: (found[0] == "", found[1]),
        )

    # LedgerStore ----------------------------------------------------------------------

    async def place_hold(self, hold: Hold) -> Placement:
        account = self.accounts.get(hold.account_id)
        if account is None:
            return Placement(False, 0)
        available = account.balance_nano - account.held_nano
        prior = self._prior(hold)
        if prior is not None and prior.state != "voided":
            same = prior.hold.fingerprint == hold.fingerprint
            return Placement(
                False, available, prior=PriorHold(prior.hold.request_id, prior.state, same)
            )
        if available < hold.amount_nano:
            return Placement(False, available)
        if hold.request_id in self.hold_rows:
            raise DuplicateRow(f"hold {hold.request_id} exists")
        if hold.budgeted:
            budgets = self._budgets_of(hold)
            for key_id, period, row in budgets:
                spent = row.spent_in(period, hold.created_ms)
                if row.limit_nano - spent - row.held_nano < hold.amount_nano:
                    use = BudgetUse(key_id or None, period, row.limit_nano, spent, row.held_nano)
                    return Placement(False, available, use)
            for _, period, row in budgets:
                row.move_to(period, hold.created_ms)
                row.held_nano += hold.amount_nano
        if prior is not None:  # a voided hold's key is free again
            prior.hold = replace(prior.hold, idempotency_key=None)
        account.held_nano += hold.amount_nano
        self.hold_rows[hold.request_id] = HoldRow(hold)
        return Placement(True, available)

    def _prior(self, hold: Hold) -> HoldRow | None:
        if hold.idempotency_key is None:
            return None
        for row in self.hold_rows.values():
            same_key = row.hold.idempotency_key == hold.idempotency_key
            if same_key and row.hold.account_id == hold.account_id:
                return row
        return None

    async def renew_holds(self, renewals: Sequence[Renewal], now_ms: int, expires_ms: int) -> None:
        for renewal in renewals:
            row = self.hold_rows.get(renewal.request_id)
            if row is not None and row.state == "open":
                row.renewed_ms = now_ms
                row.hold = replace(
                    row.hold, expires_ms=expires_ms, output_bytes=renewal.output_bytes
                )

    async def settle(self, settlement: Settlement) -> bool:
        hold = settlement.hold
        row = self.hold_rows.get(hold.request_id)
        if row is None or row.state != "open":
            return False
        invariant(
            (row.hold.account_id, row.hold.amount_nano) == (hold.account_id, hold.amount_nano),
            f"settlement of {hold.request_id} does not match its hold",
        )
        cost = settlement.cost_nano
        if cost > 0 and any(e.reference == hold.request_id for e in self.entries):
            raise DuplicateRow(f"an entry already references {hold.request_id}")
        account = self.accounts[hold.account_id]
        if hold.budgeted:
            for _, period, budget in self._budgets_of(hold):
                budget.move_to(period, settlement.settled_ms)
                budget.spent_nano += cost
                budget.held_nano = max(budget.held_nano - hold.amount_nano, 0)
        row.state, row.resolved_ms = settlement.hold_state, settlement.settled_ms
        account.held_nano -= hold.amount_nano
        account.balance_nano -= cost
        if cost > 0:
            self.entries.append(
                Entry(account.id, "debit", -cost, hold.request_id, settlement.settled_by)
            )
        self.usage_records[hold.request_id] = _usage_record(settlement, account.name)
        self.settled.append(settlement)
        return True

    async def expired_holds(self, now_ms: int, ttl_ms: int, limit: int) -> list[Hold]:
        expired = [
            row.hold
            for row in self.hold_rows.values()
            if row.state == "open"
            and (
                row.hold.expires_ms <= now_ms
                or (row.renewed_ms or row.hold.created_ms) <= now_ms - ttl_ms
            )
        ]
        return sorted(expired, key=lambda h: (h.created_ms, h.request_id))[:limit]

    async def open_holds(self, account_id: int | None = None) -> list[Hold]:
        found = [
            row.hold
            for row in self.hold_rows.values()
            if row.state == "open" and account_id in (None, row.hold.account_id)
        ]
        return sorted(found, key=lambda h: h.created_ms)

    async def balance(self, account_id: int) -> Balance | None:
        account = self.accounts.get(account_id)
        if account is None:
            return None
        return Balance(account_id, account.balance_nano, account.held_nano)

    async def usage(self, query: UsageQuery) -> list[UsageRecord]:
        found = [
            record
            for record in self.usage_records.values()
            if query.account_id in (None, record.account_id)
            and query.account_name in (None, record.account)
            and (query.since_ms is None or record.started_ms >= query.since_ms)
        ]
        found.sort(key=lambda r: (-r.started_ms, r.request_id))
        return found[: query.limit]

    async def generation(self, account_id: int, request_id: str) -> UsageRecord | None:
        record = self.usage_records.get(request_id)
        return record if record is not None and record.account_id == account_id else None

    async def budgets(self, account_id: int, key_id: str, now_ms: int) -> list[BudgetUse]:
        return [
            BudgetUse(
                k or None, period, row.limit_nano, row.spent_in(period, now_ms), row.held_nano
            )
            for (a, k, period), row in sorted(
                self.budget_rows.items(), key=lambda item: (item[0][1] == "", item[0][2])
            )
            if a == account_id and k in ("", key_id)
        ]

    # the books -------------------------------------------------------------------------

    def state(self, account_id: int) -> LedgerState:
        """What `ledger_state` reads from the tables, from this ledger's rows."""
        account = self.accounts[account_id]
        entries = [e for e in self.entries if e.account_id == account_id]
        rows = [r for r in self.hold_rows.values() if r.hold.account_id == account_id]
        open_rows = [r for r in rows if r.state == "open"]
        records = [r for r in self.usage_records.values() if r.account_id == account_id]
        return LedgerState(
            balance_nano=account.balance_nano,
            held_nano=account.held_nano,
            entries_sum=sum(e.amount_nano for e in entries),
            credits_nano=sum(e.amount_nano for e in entries if e.kind == "credit"),
            debits_nano=-sum(e.amount_nano for e in entries if e.kind == "debit"),
            usage_cost_nano=sum(r.cost_nano for r in records),
            usage_records=len(records),
            open_holds=len(open_rows),
            open_held_nano=sum(r.hold.amount_nano for r in open_rows),
            holds=len(rows),
        )


def _usage_record(settlement: Settlement, account_name: str) -> UsageRecord:
    """The record as the SQL ledgers write it: from the settlement and the hold it names."""
    hold = settlement.hold
    return UsageRecord(
        request_id=hold.request_id,
        account_id=hold.account_id,
        account=account_name,
        key_id=hold.key_id,
        model=hold.model,
        stream=hold.stream,
        prompt_tokens=settlement.prompt_tokens,
        completion_tokens=settlement.completion_tokens,
        cost_nano=settlement.cost_nano,
        held_nano=hold.amount_nano,
        settled_by=settlement.settled_by,
        status=settlement.status,
        capped=settlement.capped,
        started_ms=hold.created_ms,
        settled_ms=settlement.settled_ms,
    )


class Unopenable:
    """How the SQLite writer and its checkpointer open their connections (`connect=`),
    failing as an unopenable file does while `failing` is set."""

    def __init__(self) -> None:
        self.failing = False

    def __call__(
        self, path: str, *, busy_timeout_s: float, pragmas: Sequence[str] = ()
    ) -> sqlite3.Connection:
        if self.failing:
            raise sqlite3.OperationalError("unable to open database file")
        return connect_sqlite(path, busy_timeout_s=busy_timeout_s, pragmas=pragmas)

    @contextlib.contextmanager
    def fails(self) -> Iterator[None]:
        self.failing = True
        try:
            yield
        finally:
            self.failing = False


class Batched:
    """A SQL ledger whose every write is sent with a companion that changes nothing (the
    settlement of a hold never placed), so that each runs in a batch of two: on
    PostgreSQL, the batch statements' path instead of the single write's."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._ghosts = 0

    async def place_hold(self, hold: Hold) -> Placement:
        placement, _ = await asyncio.gather(
            self.ledger.place_hold(hold), self.ledger.settle(self._ghost(hold))
        )
        return placement

    async def settle(self, settlement: Settlement) -> bool:
        settled, _ = await asyncio.gather(
            self.ledger.settle(settlement), self.ledger.settle(self._ghost(settlement.hold))
        )
        return settled

    def _ghost(self, hold: Hold) -> Settlement:
        self._ghosts += 1
        return expired_settlement(replace(hold, request_id=f"ghost{self._ghosts}"), NOW_MS)

    async def expired_holds(self, now_ms: int, ttl_ms: int, limit: int) -> list[Hold]:
        return await self.ledger.expired_holds(now_ms, ttl_ms, limit)

    async def renew_holds(self, renewals: Sequence[Renewal], now_ms: int, expires_ms: int) -> None:
        await self.ledger.renew_holds(renewals, now_ms, expires_ms)

    async def open_holds(self, account_id: int | None = None) -> list[Hold]:
        return await self.ledger.open_holds(account_id)

    async def balance(self, account_id: int) -> Balance | None:
        return await self.ledger.balance(account_id)

    async def usage(self, query: UsageQuery) -> list[UsageRecord]:
        return await self.ledger.usage(query)

    async def generation(self, account_id: int, request_id: str) -> UsageRecord | None:
        return await self.ledger.generation(account_id, request_id)

    async def budgets(self, account_id: int, key_id: str, now_ms: int) -> list[BudgetUse]:
        return await self.ledger.budgets(account_id, key_id, now_ms)


class FakeStore(MemoryLedger):
    """The reference ledger with the tickets' account (7) alone; `gate` lets a test hold
    a placement in flight, `settle_gate` a settlement."""

    def __init__(self, balance_nano: int) -> None:
        super().__init__()
        self.accounts[7] = MemoryAccount(7, "acme", balance_nano)
        self.gate: asyncio.Event | None = None
        self.settle_gate: asyncio.Event | None = None
        self.down = False
        """While set, settlements and renewals fail as in a database outage (503);
        `lost_commit` makes the next placement commit and then fail so."""
        self.lost_commit = False

    @property
    def holds(self) -> dict[str, Hold]:
        """The open holds, by request id."""
        return {key: row.hold for key, row in self.hold_rows.items() if row.state == "open"}

    @property
    def balance_nano(self) -> int:
        return self.accounts[7].balance_nano

    async def place_hold(self, hold: Hold) -> Placement:
        if self.gate is not None:
            await self.gate.wait()
        if self.lost_commit:
            self.lost_commit = False
            await super().place_hold(hold)
            raise ServiceUnavailable("billing is unavailable")
        return await super().place_hold(hold)

    async def settle(self, settlement: Settlement) -> bool:
        if self.settle_gate is not None:
            await self.settle_gate.wait()
        if self.down:
            raise ServiceUnavailable("billing is unavailable")
        return await super().settle(settlement)

    async def renew_holds(self, renewals: Sequence[Renewal], now_ms: int, expires_ms: int) -> None:
        if self.down:
            raise ServiceUnavailable("billing is unavailable")
        await super().renew_holds(renewals, now_ms, expires_ms)


_FAKE_IS_A_LEDGER_STORE: LedgerStore = FakeStore(0)
"""A static check: mypy checks the tests, so this fails it when FakeStore drifts from
LedgerStore (a method missing, or a parameter or return type that differs)."""
