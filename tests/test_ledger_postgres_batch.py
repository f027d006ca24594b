"""The PostgreSQL ledger writer's batches: one statement per kind of write, with each
write's own exact result, on a real PostgreSQL (skipped when none is configured).

Batches are forced by calling the writer with several writes at once, or by submitting
them together before the group committer's task runs."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from teegate.billing import Hold, Placement, Settlement, expired_settlement
from teegate.store import Ledger, create_engine, upgrade
from teegate.store.postgres import (
    PostgresWriter,
    place_hold,
    place_holds,
    run_batch,
    settle_many,
)
from tests.support.billing import database_url, ledger_state, reflected
from tests.support.ledger import NOW_MS, a_hold, by_usage, funded

LedgerWrite = Hold | Settlement


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """PostgreSQL only (overrides conftest's, which also yields SQLite)."""
    with database_url("postgresql", tmp_path) as found:
        yield found


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[PostgresWriter]:
    writer = PostgresWriter(engine)
    try:
        yield writer
    finally:
        await writer.close()


async def one_at_a_time(writer: PostgresWriter, writes: list[LedgerWrite]) -> list[Any]:
    return [(await writer.transaction([write]))[0] for write in writes]


async def driver_connection(engine: AsyncEngine) -> Any:
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return await asyncpg.connect(dsn)


# a mixed batch is what one write at a time would be -----------------------------------


async def test_a_mixed_batch_returns_what_one_at_a_time_would(
    engine: AsyncEngine, writer: PostgresWriter
) -> None:
    """Twin accounts get the same writes: batched on one side, one at a time on the
    other, in the batch's serial order (its settlements, then its holds)."""
    amount = a_hold(1, "probe").amount_nano
    balances = {"rich": 10**12, "tight": 3 * amount + amount // 2, "empty": amount - 1}
    sides: dict[str, list[tuple[int, list[LedgerWrite]]]] = {"batch": [], "alone": []}
    for side, (name, balance) in itertools.product(sides, balances.items()):
        account = await funded(engine, f"{side}-{name}", balance)
        sides[side].append((account, await _mixed_writes(writer, account, f"{side}-{name}")))
    batch = [write for _, writes in sides["batch"] for write in writes]
    alone = [write for _, writes in sides["alone"] for write in writes]
    serial = [w for w in alone if isinstance(w, Settlement)] + [
        w for w in alone if isinstance(w, Hold)
    ]

    batched = await writer.transaction(batch)
    expected = dict(zip(map(id, serial), await one_at_a_time(writer, serial), strict=True))
    assert batched == [expected[id(write)] for write in alone]
    assert False in batched and Placement(False, amount - 1) in batched  # both paths ran
    for (one, _), (other, _) in zip(sides["batch"], sides["alone"], strict=True):
        state = await ledger_state(engine, one)
        state.check()
        assert state == await ledger_state(engine, other)


async def _mixed_writes(writer: PostgresWriter, account: int, prefix: str) -> list[LedgerWrite]:
    """Two holds placed beforehand (if they fit), then, interleaved: their settlements
    (one of them twice, as the reaper would) and four new holds, the third a large one."""
    old = [a_hold(account, f"{prefix}-old-{i}") for i in range(2)]
    await one_at_a_time(writer, list(old))
    new = [
        a_hold(account, f"{prefix}-new-{i}", completion=completion)
        for i, completion in enumerate([100, 100, 1000, 100])
    ]
    return [
        new[0], by_usage(old[0], 40, 30), new[1],
        expired_settlement(old[0], NOW_MS + 10**9), new[2],
        by_usage(old[1], 1, 1), new[3],
    ]  # fmt: skip


# holds: the fitting prefix, then the rest alone ---------------------------------------


# settlements: each hold claimed once ----------------------------------------------------


# a failing batch ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["settlement", "hold"])
async def test_a_batch_failing_in_either_statement_gives_every_other_write_its_result(
    engine: AsyncEngine, bad: str
) -> None:
    """One write fails its kind's statement: a settlement (an entry already references its
    request, so its debit cannot) in the first, or a hold (its id is taken) in the second,
    after the settlements' claims. The batch rolls back whole and each write runs alone:
    none is reported for what did not commit, none misses what did."""
    acme, beta = await funded(engine, "acme", 10**12), await funded(engine, "beta", 10**12)
    placed = [a_hold(account, f"req_{account}_{i}") for account in (acme, beta) for i in range(3)]
    async with Ledger(engine).running() as ledger:
        for hold in placed:
            await ledger.place_hold(hold)
        await _reference_in_use(engine, acme, placed[0].request_id)
        failing = (
            ledger.settle(by_usage(placed[0], 5, 5))
            if bad == "settlement"
            else ledger.place_hold(a_hold(beta, placed[3].request_id))
        )
        before = ledger.writer.transactions
        with capture_logs() as logs:
            results = await asyncio.gather(
                *(ledger.settle(by_usage(hold, 5, 5)) for hold in placed[1:]),
                ledger.place_hold(a_hold(acme, "req_new_acme")),
                ledger.place_hold(a_hold(beta, "req_new_beta")),
                failing,
                return_exceptions=True,
            )
        assert [e["writes"] for e in logs if e["event"] == "batch_retried_alone"] == [8]
        assert ledger.writer.transactions - before == 7  # the seven good writes, alone
    cost = by_usage(placed[0], 5, 5).cost_nano  # each settlement's, alone before its holds
    assert results[:7] == [
        *[True] * 5,
        Placement(True, 10**12 - placed[0].amount_nano - 2 * cost),
        Placement(True, 10**12 - 3 * cost),
    ]
    assert isinstance(results[7], asyncpg.UniqueViolationError)
    for account, still_open in [(acme, 2), (beta, 1)]:
        state = await ledger_state(engine, account)
        state.check()
        assert state.open_holds == still_open


async def _reference_in_use(engine: AsyncEngine, account_id: int, reference: str) -> None:
    """A zero adjustment referencing `reference`: the books still balance, but no debit
    can take that reference."""
    async with engine.begin() as conn:
        ledger_entries = (await reflected(conn)).tables["ledger_entries"]
        await conn.execute(
            insert(ledger_entries).values(
                account_id=account_id, kind="adjust", amount_nano=0, memo="",
                reference=reference, created_ms=NOW_MS,
            )
        )  # fmt: skip


# lock order --------------------------------------------------------------------------------


async def test_the_first_statement_locks_the_later_statements_accounts(
    engine: AsyncEngine,
) -> None:
    """Settlements run first and take the accounts the batch's holds will change too, so
    a transaction takes account rows in one ascending pass (two writers cannot deadlock)."""
    settled, held = await funded(engine, "settled", 10**9), await funded(engine, "held", 10**9)
    hold = a_hold(settled, "req_1")
    conn, other = await driver_connection(engine), await driver_connection(engine)
    try:
        assert (await place_hold(conn, hold)).placed
        async with conn.transaction():
            settle = [by_usage(hold, 1, 1)]
            assert await settle_many(conn, settle, [held]) == [True]
            for account in (settled, held):
                with pytest.raises(asyncpg.LockNotAvailableError):
                    await other.execute(
                        "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE NOWAIT", account
                    )
    finally:
        await conn.close()
        await other.close()


async def test_a_batch_runs_settlements_first_and_tells_them_the_holds_accounts(
    engine: AsyncEngine, writer: PostgresWriter
) -> None:
    """What the writer runs for a batch (as `_in_transaction`), its two statements watched."""
    acme, beta, gamma = [await funded(engine, name, 10**9) for name in ("a", "b", "c")]
    hold = a_hold(beta, "req_1")
    await writer.transaction([hold])
    calls: list[tuple[str, list[int], list[int]]] = []

    def spy(run: Any) -> Any:
        async def spying(conn: Any, writes: Any, later: Any) -> Any:
            accounts = [w.hold.account_id if isinstance(w, Settlement) else w.account_id
                        for w in writes]  # fmt: skip
            calls.append((run.__name__, accounts, list(later)))
            return await run(conn, writes, later)

        return spying

    conn = await driver_connection(engine)
    try:
        async with conn.transaction():
            await run_batch(
                conn,
                [a_hold(gamma, "req_2"), by_usage(hold, 1, 1), a_hold(acme, "req_3")],
                settle=spy(settle_many),
                place=spy(place_holds),
            )
    finally:
        await conn.close()
    assert calls == [("settle_many", [beta], [acme, gamma]), ("place_holds", [gamma, acme], [])]


async def test_a_batch_waits_for_another_writer_and_decides_on_what_it_committed(
    engine: AsyncEngine,
) -> None:
    """Another writer's uncommitted claim and holds: this batch waits for its locks, then
    claims nothing already claimed and places nothing the committed holds left no room for."""
    amount = a_hold(1, "probe").amount_nano
    account = await funded(engine, "acme", 3 * amount)
    settled = a_hold(account, "req_settled")
    conn, other = await driver_connection(engine), await driver_connection(engine)
    try:
        assert (await place_hold(conn, settled)).placed
        async with conn.transaction():
            settlement, hold_1 = by_usage(settled, 1, 1), a_hold(account, "req_1")
            assert await settle_many(conn, [settlement], [account]) == [True]
            assert (await place_holds(conn, [hold_1], []))[0].placed
            second: list[LedgerWrite] = [
                expired_settlement(settled, NOW_MS + 10**9),
                a_hold(account, "req_2"), a_hold(account, "req_3"),
            ]  # fmt: skip
            racing = asyncio.create_task(_in_transaction(other, second))
            await asyncio.sleep(0.3)
            assert not racing.done()  # it waits for the hold's and the account's rows
        room = 3 * amount - by_usage(settled, 1, 1).cost_nano - amount
        assert await racing == [False, Placement(True, room), Placement(False, room - amount)]
    finally:
        await conn.close()
        await other.close()
    state = await ledger_state(engine, account)
    state.check()
    assert (state.usage_records, state.open_holds) == (1, 2)


async def test_a_batch_of_holds_waits_for_another_writer_s_holds(engine: AsyncEngine) -> None:
    amount = a_hold(1, "probe").amount_nano
    account = await funded(engine, "acme", 3 * amount)
    conn, other = await driver_connection(engine), await driver_connection(engine)
    try:
        async with conn.transaction():
            first: list[LedgerWrite] = [a_hold(account, f"req_{i}") for i in range(2)]
            assert await run_batch(conn, first) == [
                Placement(True, 3 * amount),
                Placement(True, 2 * amount),
            ]
            second: list[LedgerWrite] = [a_hold(account, f"req_{i}") for i in range(2, 4)]
            racing = asyncio.create_task(_in_transaction(other, second))
            await asyncio.sleep(0.3)
            assert not racing.done()  # it waits for the account's row
        assert await racing == [Placement(True, amount), Placement(False, 0)]
    finally:
        await conn.close()
        await other.close()
    state = await ledger_state(engine, account)
    state.check()
    assert (state.open_holds, state.held_nano) == (3, 3 * amount)


async def _in_transaction(conn: Any, writes: list[LedgerWrite]) -> list[Any]:
    """What the writer runs for a batch, on a connection of the test's own."""
    async with conn.transaction():
        return await run_batch(conn, writes)


async def test_two_writers_with_crossing_mixed_batches_keep_the_books(url: str) -> None:
    """Two replicas settle each other's holds while placing new ones, on the same
    accounts: every batch commits whole (no deadlock retried alone) and the books hold."""
    engines = [create_engine(url), create_engine(url)]
    try:
        await upgrade(engines[0])
        accounts = [await funded(engines[0], f"acct_{i}", 10**12) for i in range(4)]
        async with Ledger(engines[0]).running() as one, Ledger(engines[1]).running() as two:
            ledgers = (one, two)
            with capture_logs() as logs:
                previous: list[Hold] = []
                for round_ in range(6):
                    new = [a_hold(a, f"r{round_}_{a}_{i}") for a in accounts for i in range(4)]
                    await asyncio.gather(
                        *(ledgers[i % 2].place_hold(h) for i, h in enumerate(new)),
                        *(ledgers[(i + 1) % 2].settle(by_usage(h, 3, 3))
                          for i, h in enumerate(previous)),
                    )  # fmt: skip
                    previous = new
                await asyncio.gather(*(one.settle(by_usage(h, 3, 3)) for h in previous))
            assert [event for event in logs if event["event"] == "batch_retried_alone"] == []
        for account in accounts:
            state = await ledger_state(engines[0], account)
            state.check()
            assert (state.usage_records, state.open_holds) == (24, 0)
    finally:
        for engine in engines:
            await engine.dispose()
