"""store.ReceiptLog: appends on each engine, and on SQLite through the ledger's writer.

The gateway passes the ledger's writer so that receipts commit on the writer's own
connection: a second connection holding SQLite's write lock would make the next
request's hold wait (or fall back to the writer's thread) behind it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading

import pytest
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.receipts import LogEntry, StoredReceipt
from teegate.store import Ledger, ReceiptLog, writer_for
from teegate.store.sqlite import SQLITE_THREAD
from tests.support.ledger import a_hold, funded


def entry(name: str) -> LogEntry:
    data = f'{{"type":"verdict","id":"{name}"}}'.encode()
    return LogEntry(f"verdict:{name}", data, hashlib.sha256(b"\0" + data).digest())


def receipt(receipt_id: str, account_id: int) -> StoredReceipt:
    return StoredReceipt(receipt_id, account_id, f"req_{receipt_id}", 1, b'{"receipt":{}}')


async def exercise(log: ReceiptLog, account_id: int) -> None:
    """What every engine and path must agree on: next indices, one index per entry id
    however often appended, receipts read back as written."""
    assert await log.append([entry("a"), entry("b")], []) == [0, 1]
    assert await log.append([entry("b"), entry("c"), entry("a")], [receipt("r1", account_id)]) == [
        1,
        2,
        0,
    ]
    assert await log.append([], [receipt("r2", account_id)]) == []
    assert await log.leaf_hashes(1) == [entry("b").leaf_hash, entry("c").leaf_hash]
    assert await log.leaves(0, 3) == [entry(n).data for n in "abc"]
    stored = await log.receipt("r1")
    assert stored == receipt("r1", account_id)
    assert await log.receipt("r3") is None


async def test_appends_on_each_engine(engine: AsyncEngine) -> None:
    account = await funded(engine, "acme", 10**9)
    await exercise(ReceiptLog(engine), account)


async def test_on_sqlite_appends_run_inline_on_the_ledgers_writer(engine: AsyncEngine) -> None:
    account = await funded(engine, "acme", 10**9)
    writer = writer_for(engine)
    async with Ledger(engine, writer=writer).running() as ledger:
        await exercise(ReceiptLog(engine, writer=writer), account)
        assert (await ledger.place_hold(a_hold(account, "req_1"))).placed
        if engine.dialect.name == "sqlite":  # the lock was never busy: no batch left the loop
            assert not [t for t in threading.enumerate() if t.name.startswith(SQLITE_THREAD)]


async def test_a_failed_sqlite_append_leaves_nothing_behind(engine: AsyncEngine) -> None:
    """A receipt id already stored fails the whole batch: its new leaves are not kept."""
    account = await funded(engine, "acme", 10**9)
    writer = writer_for(engine)
    async with Ledger(engine, writer=writer).running():
        log = ReceiptLog(engine, writer=writer)
        await log.append([], [receipt("r1", account)])
        with pytest.raises((sqlite3.IntegrityError, sqlalchemy.exc.IntegrityError)):
            await log.append([entry("a")], [receipt("r1", account)])
        assert await log.leaf_hashes(0) == []
        assert await log.append([entry("a")], []) == [0]
