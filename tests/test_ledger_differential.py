"""The same random holds, settlements, expiries, credits and crashes applied to every
ledger implementation, which must keep identical books and the ledger's invariants.

A hypothesis state machine drives the reference ledger (tests/support/ledger.py) and
the SQL ledgers side by side: SQLite always; PostgreSQL one write at a time and in
batches when TEEGATE_TEST_POSTGRES_URL is set. Each step runs on every implementation
and their answers must agree; after each step their books (accounts, every hold and
its state, the ledger's entries, the usage records) must be equal and balanced.

Writes sent together (a step's holds, a step's settlements, the reaper's round) are
of one kind: the contract lets a batch that mixes holds and settlements on one
account run them in another serial order than they were sent (PostgreSQL runs a
batch's settlements first), so such a batch has more than one right answer.

Two of the accounts have spend budgets (a key's, the account's), so their holds are
budgeted and must fit every budget as well as the balance; the budgets' rows (limit,
period, spent, held) are part of the books.

A crash stops every SQL ledger and reopens it on a new engine: what a client had in
flight then (holds placed just before) is forgotten by the client, and only the
reaper can resolve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.billing import (
    BudgetPeriod,
    Hold,
    Placement,
    Rates,
    Reaper,
    Renewal,
    Settlement,
    UsageQuery,
    expired_settlement,
    settlement_for,
    void_settlement,
)
from teegate.store import Ledger, create_engine, upgrade
from tests.support.billing import database_url, postgres_url
from tests.support.ledger import NOW_MS, Batched, MemoryLedger, Usage, a_hold

DIFFERENTIAL = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
"""Bounded for CI: some five hundred steps per test on every implementation, which
finish within a minute on a loaded 2-core machine."""

ACCOUNTS = ("acct0", "acct1", "acct2")
BUDGETS: tuple[tuple[int, str, BudgetPeriod, int], ...] = (
    # account, key ('' for the account's own), period, limit: acct3 has none
    (1, "key_1", "day", 300),
    (2, "", "lifetime", 1_500),
    (2, "key_1", "month", 250),
)
BUDGETED = {account for account, *_ in BUDGETS}
ONE_NANO_A_TOKEN = Rates(1_000_000, 1_000_000)
MAX_ENTRIES = 10_000
MAX_CRASHES = 2
"""Per example: a restart costs tens of ms, a dozen steps' worth."""

accounts = st.sampled_from(range(1, len(ACCOUNTS) + 1))
hold_specs = st.lists(
    st.tuples(accounts, st.integers(0, 100), st.integers(0, 100), st.sampled_from([500, 60_000])),
    min_size=1,
    max_size=4,
)


TABLES = {
    "accounts": "SELECT id, name, balance_nano, held_nano FROM accounts",
    "holds": "SELECT id, account_id, amount_nano, state, resolved_ms, expires_ms, output_bytes,"
    " idempotency_key FROM holds",
    "entries": "SELECT account_id, kind, amount_nano, reference, memo FROM ledger_entries",
    "usage": "SELECT request_id, account_id, key_id, model, stream, prompt_tokens,"
    " completion_tokens, cost_nano, held_nano, settled_by, status, capped, started_ms,"
    " settled_ms FROM usage_records",
    "budgets": "SELECT account_id, key_id, period, limit_nano, period_start_ms, spent_nano,"
    " held_nano FROM budgets",
}
"""The books as the tables keep them; rows are compared sorted."""


@dataclass(frozen=True)
class Books:
    """Everything an implementation keeps: each table's rows, sorted (see `TABLES`)."""

    accounts: tuple[tuple[Any, ...], ...]  # id, name, balance, held
    holds: tuple[tuple[Any, ...], ...]  # id, account, amount, state, resolved, lease, key
    entries: tuple[tuple[Any, ...], ...]  # account, kind, amount, reference, memo
    usage: tuple[tuple[Any, ...], ...]  # request, account, ..., cost (7), ...
    budgets: tuple[tuple[Any, ...], ...]  # account, key, period, limit, start, spent, held

    @classmethod
    def of(cls, **tables: Iterable[Sequence[Any]]) -> Books:
        return cls(
            **{name: tuple(sorted(map(tuple, rows), key=_order)) for name, rows in tables.items()}
        )

    def check(self) -> None:
        """The ledger's invariants, whatever happened."""
        for account_id, name, balance, held in self.accounts:
            entries = [e for e in self.entries if e[0] == account_id]
            credits = sum(e[2] for e in entries if e[1] == "credit")
            debits = -sum(e[2] for e in entries if e[1] == "debit")
            assert balance == credits - debits, f"{name}: balance != credits - debits"
            open_held = sum(h[2] for h in self.holds if h[1] == account_id and h[3] == "open")
            assert held == open_held, f"{name}: held != the sum of its open holds"
            assert 0 <= held <= balance, f"{name}: negative, or held beyond the balance"
            costs = sum(u[7] for u in self.usage if u[1] == account_id)
            assert costs == debits, f"{name}: usage costs != debits"
        resolved = [h[0] for h in self.holds if h[3] != "open"]
        assert [u[0] for u in self.usage] == resolved, "a hold resolved twice, or never"
        references = [e[3] for e in self.entries if e[1] == "debit"]
        assert len(references) == len(set(references)), "a request debited twice"
        for h in self.holds:
            assert (h[3] == "open") == (h[4] is None), f"{h[0]}: state and resolution disagree"
        for account_id, key_id, period, limit, _, spent, held in self.budgets:
            where = f"{account_id}/{key_id or '-'}/{period}"
            assert held >= 0 and spent >= 0, f"{where}: a negative amount"
            assert spent + held <= limit, f"{where}: spent and held beyond the limit"
            open_held = sum(h[2] for h in self.holds if h[1] == account_id and h[3] == "open")
            assert held == open_held, f"{where}: held != its account's open (budgeted) holds"


def _order(row: tuple[Any, ...]) -> tuple[str, ...]:
    """Rows of every engine in one order (None first; SQLite's 0/1 as PostgreSQL's bools)."""
    return tuple("" if value is None else repr(int(value) if isinstance(value, bool) else value)
                 for value in row)  # fmt: skip


class Implementation(Protocol):
    """One ledger under test, reset for each example and reopened on a crash."""

    name: str

    @property
    def ledger(self) -> Any: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def credit(self, name: str, amount_nano: int) -> None: ...

    async def crash(self) -> None: ...

    async def books(self) -> Books: ...

    async def close(self) -> None: ...


class Reference:
    """The reference ledger: it loses nothing in a crash, having nothing in flight."""

    name = "reference"

    def __init__(self) -> None:
        self.memory = MemoryLedger()

    @property
    def ledger(self) -> MemoryLedger:
        return self.memory

    async def start(self) -> None:
        self.memory = MemoryLedger()
        for name in ACCOUNTS:
            self.memory.create_account(name)
        for account_id, key_id, period, limit in BUDGETS:
            self.memory.set_budget(account_id, key_id, period, limit)

    async def stop(self) -> None:
        pass

    async def crash(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def credit(self, name: str, amount_nano: int) -> None:
        self.memory.credit(name, amount_nano)

    async def books(self) -> Books:
        memory = self.memory
        return Books.of(
            accounts=(
                (a.id, a.name, a.balance_nano, a.held_nano) for a in memory.accounts.values()
            ),
            holds=(
                (
                    r.hold.request_id,
                    r.hold.account_id,
                    r.hold.amount_nano,
                    r.state,
                    r.resolved_ms,
                    r.hold.expires_ms,
                    r.hold.output_bytes,
                    r.hold.idempotency_key,
                )
                for r in memory.hold_rows.values()
            ),
            entries=(
                (e.account_id, e.kind, e.amount_nano, e.reference, e.memo) for e in memory.entries
            ),
            usage=(
                (r.request_id, r.account_id, *astuple(r)[3:]) for r in memory.usage_records.values()
            ),
            budgets=(
                (a, k, p, b.limit_nano, b.period_start_ms, b.spent_nano, b.held_nano)
                for (a, k, p), b in memory.budget_rows.items()
            ),
        )


class Sql:
    """A SQL ledger: `single` sends every write alone (max_batch=1), `batched` sends each
    with a companion so that PostgreSQL runs its batch statements. The test's own
    reads and credits go straight to the tables, on a connection of its own: they
    are not what is tested (test_store.py tests AccountStore's credit), and each
    would otherwise cost a step's worth of pool and thread hops."""

    def __init__(self, name: str, url: str, *, single: bool = False, batched: bool = False):
        self.name = name
        self._url = url
        self._single = single
        self._batched = batched
        self._engine: AsyncEngine | None = None
        self._tables: Tables | None = None
        self._running = contextlib.AsyncExitStack()
        self.ledger: Ledger | Batched | None = None

    @property
    def engine(self) -> AsyncEngine:
        assert self._engine is not None
        return self._engine

    @property
    def tables(self) -> Tables:
        assert self._tables is not None
        return self._tables

    async def start(self) -> None:
        if self._engine is None:
            engine = self._engine = create_engine(self._url)
            await upgrade(engine)
            self._tables = await (
                SqliteTables if engine.dialect.name == "sqlite" else PostgresTables
            ).open(self._url)
        await self.tables.reset()
        await self._open()

    async def _open(self) -> None:
        ledger = Ledger(self.engine, max_batch=1) if self._single else Ledger(self.engine)
        await self._running.enter_async_context(ledger.running())
        self.ledger = Batched(ledger) if self._batched else ledger

    async def stop(self) -> None:
        await self._running.aclose()

    async def credit(self, name: str, amount_nano: int) -> None:
        await self.tables.credit(ACCOUNTS.index(name) + 1, amount_nano)

    async def crash(self) -> None:
        """Stop the writer and drop every connection, then start over on a new engine."""
        await self._running.aclose()
        await self.engine.dispose()
        self._engine = create_engine(self._url)
        await self._open()

    async def books(self) -> Books:
        return Books.of(**await self.tables.read())

    async def close(self) -> None:
        await self._running.aclose()
        if self._tables is not None:
            await self._tables.close()
        if self._engine is not None:
            await self._engine.dispose()


RESET = (
    "DELETE FROM usage_records; DELETE FROM holds; DELETE FROM ledger_entries;"
    " DELETE FROM budgets; DELETE FROM api_keys; DELETE FROM accounts;"
    " INSERT INTO accounts (id, name, balance_nano, held_nano, created_ms) VALUES "
    + ", ".join(f"({i}, '{name}', 0, 0, 0)" for i, name in enumerate(ACCOUNTS, 1))
    + "; INSERT INTO budgets (account_id, key_id, period, limit_nano) VALUES "
    + ", ".join(f"({a}, '{k}', '{p}', {limit})" for a, k, p, limit in BUDGETS)
)
"""Empty books and the same accounts again: cheaper than a new database per example."""

CREDIT = (  # as AccountStore's credit: an entry, and the balance it changes
    "INSERT INTO ledger_entries (account_id, kind, amount_nano, memo, created_ms)"
    " VALUES ({account}, 'credit', {amount}, 'credit', 0)",
    "UPDATE accounts SET balance_nano = balance_nano + {amount} WHERE id = {account}",
)


class Tables(Protocol):
    async def reset(self) -> None: ...

    async def credit(self, account_id: int, amount_nano: int) -> None: ...

    async def read(self) -> dict[str, list[Any]]: ...

    async def close(self) -> None: ...


class SqliteTables:
    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)

    @classmethod
    async def open(cls, url: str) -> SqliteTables:
        path = make_url(url).database
        assert path is not None
        return cls(path)

    async def reset(self) -> None:
        self._conn.executescript(f"BEGIN IMMEDIATE; {RESET}; COMMIT;")

    async def credit(self, account_id: int, amount_nano: int) -> None:
        statements = (sql.format(account=account_id, amount=amount_nano) for sql in CREDIT)
        self._conn.executescript(f"BEGIN IMMEDIATE; {'; '.join(statements)}; COMMIT;")

    async def read(self) -> dict[str, list[Any]]:
        return {name: self._conn.execute(sql).fetchall() for name, sql in TABLES.items()}

    async def close(self) -> None:
        self._conn.close()


class PostgresTables:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, url: str) -> PostgresTables:
        """Also: commit without waiting for the WAL's flush, on every connection to come.
        The server does not crash here, so the books cannot tell, and a step saves a
        disk write per commit."""
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        await conn.execute("SET synchronous_commit = off")
        return cls(conn)

    async def reset(self) -> None:
        await self._conn.execute(RESET)

    async def credit(self, account_id: int, amount_nano: int) -> None:
        statements = (sql.format(account=account_id, amount=amount_nano) for sql in CREDIT)
        await self._conn.execute(f"BEGIN; {'; '.join(statements)}; COMMIT;")

    async def read(self) -> dict[str, list[Any]]:
        return {name: await self._conn.fetch(sql) for name, sql in TABLES.items()}

    async def close(self) -> None:
        await self._conn.close()


class Harness:
    """The implementations and the event loop every step runs on, for one test: engines
    and databases outlive the examples, which only reset the tables."""

    def __init__(self, implementations: list[Implementation]) -> None:
        self.implementations = implementations
        self.runner = asyncio.Runner()

    def run(self, call: Any) -> list[Any]:
        """`call(implementation)` on each, in turn; their results in that order."""

        async def each() -> list[Any]:
            return [await call(implementation) for implementation in self.implementations]

        return self.runner.run(each())

    def close(self) -> None:
        try:
            self.run(lambda implementation: implementation.close())
        finally:
            self.runner.close()


class LedgerMachine(RuleBasedStateMachine):
    """The client's side: what it placed, and the clock."""

    harness: Harness

    def __init__(self) -> None:
        super().__init__()
        self.now = NOW_MS
        self.serial = 0
        self.crashes = 0
        self.known: list[Hold] = []  # placed, as far as the client knows
        self.claimed: set[str] = set()  # settled by the client (the reaper's are not here)
        self.harness.run(lambda implementation: implementation.start())

    def agreed(self, results: list[Any], what: str) -> Any:
        names = [i.name for i in self.harness.implementations]
        for name, result in zip(names[1:], results[1:], strict=True):
            assert result == results[0], f"{what}: {name} says {result}, {names[0]} {results[0]}"
        return results[0]

    def new_holds(self, specs: list[tuple[int, int, int, int]]) -> list[Hold]:
        holds = []
        for account_id, prompt, completion, ttl_ms in specs:
            self.serial += 1
            holds.append(
                replace(
                    a_hold(account_id, f"req{self.serial:05d}", created=self.now, ttl_ms=ttl_ms),
                    rates=ONE_NANO_A_TOKEN,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    amount_nano=prompt + completion,
                    budgeted=account_id in BUDGETED,  # as the key's principal would say
                )
            )
        return holds

    def place(self, holds: list[Hold]) -> list[Placement]:
        async def place(implementation: Implementation) -> list[Placement]:
            return list(await asyncio.gather(*map(implementation.ledger.place_hold, holds)))

        placements: list[Placement] = self.agreed(self.harness.run(place), "placements")
        return placements

    @rule(account=accounts, amount=st.integers(1, 500))
    def credit(self, account: int, amount: int) -> None:
        name = ACCOUNTS[account - 1]
        self.harness.run(lambda implementation: implementation.credit(name, amount))

    @rule(specs=hold_specs)
    def place_holds(self, specs: list[tuple[int, int, int, int]]) -> None:
        holds = self.new_holds(specs)
        for hold, placement in zip(holds, self.place(holds), strict=True):
            if placement.placed:
                self.known.append(hold)

    @rule(account=accounts, edge=st.sampled_from([-1, 0, 1]), ttl_ms=st.sampled_from([500, 60_000]))
    def place_at_the_edge(self, account: int, edge: int, ttl_ms: int) -> None:
        """A hold of exactly what is available (the balance's, or its budgets' if less),
        or one nano less or more."""
        reference = self.harness.implementations[0]
        assert isinstance(reference, Reference)
        funds = reference.memory.accounts[account]
        rooms = [funds.balance_nano - funds.held_nano]
        for (account_id, _, period), budget in reference.memory.budget_rows.items():
            if account_id == account:
                spent = budget.spent_in(period, self.now)
                rooms.append(budget.limit_nano - spent - budget.held_nano)
        amount = max(0, min(rooms) + edge)
        [hold] = self.new_holds([(account, amount, 0, ttl_ms)])
        [placement] = self.place([hold])
        assert placement.placed == (edge <= 0)
        if placement.placed:
            self.known.append(hold)

    @rule(account=st.sampled_from(sorted(BUDGETED)), edge=st.sampled_from([-1, 0, 1]))
    def place_at_a_budgets_edge(self, account: int, edge: int) -> None:
        """With the balance made ample, a hold of exactly what its tightest budget has
        left, or one nano less or more."""
        reference = self.harness.implementations[0]
        assert isinstance(reference, Reference)
        rooms = [
            budget.limit_nano - budget.spent_in(period, self.now) - budget.held_nano
            for (account_id, _, period), budget in reference.memory.budget_rows.items()
            if account_id == account
        ]
        funds = reference.memory.accounts[account]
        short = min(rooms) + 1 - (funds.balance_nano - funds.held_nano)
        if short > 0:
            self.credit(account, short)
        amount = max(0, min(rooms) + edge)
        [hold] = self.new_holds([(account, amount, 0, 60_000)])
        [placement] = self.place([hold])
        assert placement.placed == (edge <= 0 or amount == 0)
        if placement.placed:
            self.known.append(hold)

    @rule(
        account=accounts,
        keys=st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("xy")), max_size=3),
    )
    def place_keyed(self, account: int, keys: list[tuple[str, str]]) -> None:
        """Holds with Idempotency-Keys (and bodies) from a small set, sent at once:
        a key the account used before, not voided, is refused with that hold named."""
        holds = [
            replace(hold, idempotency_key=key * 64, fingerprint=body * 64)
            for hold, (key, body) in zip(
                self.new_holds([(account, 10, 10, 60_000)] * len(keys)), keys, strict=True
            )
        ]
        for hold, placement in zip(holds, self.place(holds), strict=True):
            if placement.placed:
                self.known.append(hold)

    @precondition(lambda self: self.known)
    @rule(data=st.data(), ttl_ms=st.sampled_from([500, 60_000]))
    def renew(self, data: st.DataObject, ttl_ms: int) -> None:
        """A replica renews the leases of some holds (resolved ones too: a renewal that
        raced the settlement), each with its output so far."""
        holds = data.draw(st.lists(st.sampled_from(self.known), min_size=1, max_size=4))
        renewals = [Renewal(h.request_id, data.draw(st.integers(0, 400))) for h in holds]
        renewals = list({r.request_id: r for r in renewals}.values())

        async def renew(implementation: Implementation) -> None:
            await implementation.ledger.renew_holds(renewals, self.now, self.now + ttl_ms)

        self.harness.run(renew)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        """Up to three settlements at once, of any hold the client placed: settled
        already (a duplicate), twice in one batch, or reaped meanwhile, they claim nothing."""
        holds = data.draw(st.lists(st.sampled_from(self.known), min_size=1, max_size=3))
        settlements = [data.draw(settlements_of(hold, self.now)) for hold in holds]

        async def settle(implementation: Implementation) -> list[bool]:
            ledger = implementation.ledger
            return list(await asyncio.gather(*map(ledger.settle, settlements)))

        claimed = self.agreed(self.harness.run(settle), "settlements")
        for settlement, ok in zip(settlements, claimed, strict=True):
            if ok:
                request_id = settlement.hold.request_id
                assert request_id not in self.claimed, f"{request_id} claimed twice"
                self.claimed.add(request_id)

    @rule(ttl_s=st.sampled_from([30, 3_600]))
    def reap(self, ttl_s: int) -> None:
        async def reap(implementation: Implementation) -> int:
            reaper = Reaper(implementation.ledger, hold_ttl_s=ttl_s, interval_s=1, clock=self.clock)
            return await reaper.reap_once()

        self.agreed(self.harness.run(reap), "holds reaped")

    def clock(self) -> int:
        return self.now

    @rule(ms=st.integers(1, 90_000))
    def advance(self, ms: int) -> None:
        self.now += ms

    @precondition(lambda self: self.crashes < MAX_CRASHES)
    @rule(in_flight=st.lists(hold_specs.map(lambda specs: specs[0]), max_size=3))
    def crash(self, in_flight: list[tuple[int, int, int, int]]) -> None:
        """Holds placed just before the crash commit, but their client is gone: nobody
        will settle them. Then every store starts over."""
        self.place(self.new_holds(in_flight))
        self.harness.run(lambda implementation: implementation.crash())
        self.crashes += 1

    @invariant()
    def same_books(self) -> None:
        books: list[Books] = self.harness.run(lambda implementation: implementation.books())
        books[0].check()
        self.agreed(books, "books")

    def teardown(self) -> None:
        """Last, what the contract reads: each account's balance, as the books have it."""
        try:
            books = self.harness.run(lambda implementation: implementation.books())
            for account_id, name, balance, held in self.agreed(books, "books").accounts:
                found = self.agreed(
                    self.harness.run(lambda i, a=account_id: i.ledger.balance(a)), "balances"
                )
                assert (found.balance_nano, found.held_nano) == (balance, held), name
            query = UsageQuery(limit=MAX_ENTRIES)
            records = self.agreed(self.harness.run(lambda i: i.ledger.usage(query)), "usage")
            assert len(records) == len(books[0].usage)
        finally:
            self.harness.run(lambda implementation: implementation.stop())


@st.composite
def settlements_of(draw: st.DrawFn, hold: Hold, now_ms: int) -> Settlement:
    """How a request may end: its usage (up to past the hold, which caps it), bytes only
    (the fallback), nothing sent (void), or too late (posted in full, as the reaper)."""
    kind = draw(st.sampled_from(["usage", "fallback", "void", "expired"]))
    if kind == "usage":
        usage = Usage(draw(st.integers(0, 400)), draw(st.integers(0, 400)))
        return settlement_for(hold, status="ok", usage=usage, output_bytes=0, now_ms=now_ms)
    if kind == "fallback":
        output = draw(st.integers(1, 800))
        return settlement_for(hold, status="ok", usage=None, output_bytes=output, now_ms=now_ms)
    if kind == "void":
        return void_settlement(hold, "upstream_error", now_ms)
    return expired_settlement(hold, now_ms)


def run_machine(implementations: list[Implementation]) -> None:
    harness = Harness(implementations)

    class Machine(LedgerMachine):
        pass

    Machine.harness = harness
    try:
        run_state_machine_as_test(Machine, settings=DIFFERENTIAL)
    finally:
        harness.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with database_url("sqlite", tmp_path) as url:
        yield url


def test_sqlite_keeps_the_reference_books(sqlite_url: str) -> None:
    run_machine([Reference(), Sql("sqlite", sqlite_url)])


@pytest.mark.skipif(
    not postgres_url(), reason="set TEEGATE_TEST_POSTGRES_URL to run it on PostgreSQL"
)
def test_postgres_single_and_batched_keep_the_reference_books(tmp_path: Path) -> None:
    with (
        database_url("postgresql", tmp_path) as single,
        database_url("postgresql", tmp_path) as batched,
    ):
        run_machine([
            Reference(),
            Sql("postgres-single", single, single=True),
            Sql("postgres-batch", batched, batched=True),
        ])  # fmt: skip
