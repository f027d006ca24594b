"""Helpers for the billing tests: a database per engine, and the ledger's invariants.

PostgreSQL tests get a database of their own (created and dropped here), so a
gateway built from a plain URL, in-process or in a subprocess, is isolated too.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import (
    ColumnElement,
    Connection,
    MetaData,
    ScalarSelect,
    Select,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def postgres_url() -> str | None:
    return os.environ.get("TEEGATE_TEST_POSTGRES_URL")


ENGINES = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            postgres_url() is None,
            reason="set TEEGATE_TEST_POSTGRES_URL to run the billing tests on PostgreSQL",
        ),
    ),
]


@contextmanager
def database_url(kind: str, directory: Path) -> Iterator[str]:
    """A fresh, empty database of `kind` for one test or module; dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'billing.db'}"
        return
    base = postgres_url()
    if base is None:
        pytest.skip("TEEGATE_TEST_POSTGRES_URL is not set")
    name = f"teegate_billing_{secrets.token_hex(6)}"
    asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class LedgerState:
    """One account's books, read straight from the tables."""

    balance_nano: int
    held_nano: int
    entries_sum: int
    credits_nano: int
    debits_nano: int
    usage_cost_nano: int
    usage_records: int
    open_holds: int
    open_held_nano: int
    holds: int

    def check(self) -> None:
        """The invariants every test ends on, whatever happened in between."""
        assert self.balance_nano == self.entries_sum, "balance is not the sum of its entries"
        assert self.usage_cost_nano == self.debits_nano, "usage costs != ledger debits"
        assert self.held_nano == self.open_held_nano, "held != the sum of open holds"
        assert 0 <= self.held_nano <= self.balance_nano, "overdraft beyond open holds"
        assert self.usage_records == self.holds - self.open_holds, "a hold resolved twice/never"


async def reflected(conn: AsyncConnection) -> MetaData:
    """The tables as the migrations made them: tests read the database itself, not the
    gateway's own description of it."""
    return await conn.run_sync(_reflect)


def _reflect(conn: Connection) -> MetaData:
    tables = MetaData()
    tables.reflect(conn)
    return tables


async def ledger_state(engine: AsyncEngine, account_id: int) -> LedgerState:
    async with engine.connect() as conn:
        tables = (await reflected(conn)).tables
        query = _books_query(
            tables["accounts"], tables["holds"], tables["ledger_entries"], tables["usage_records"],
            account_id,
        )  # fmt: skip
        row = (await conn.execute(query)).one()
    return LedgerState(*(int(v) for v in row))


def _books_query(
    accounts: Table, holds: Table, ledger_entries: Table, usage_records: Table, account_id: int
) -> Select[tuple[Any, ...]]:
    def total(column: ColumnElement[int], *where: ColumnElement[bool]) -> ScalarSelect[int]:
        return select(func.coalesce(func.sum(column), 0)).where(*where).scalar_subquery()

    entries = ledger_entries.c
    return select(
        accounts.c.balance_nano,
        accounts.c.held_nano,
        total(entries.amount_nano, entries.account_id == account_id).label("entries_sum"),
        total(entries.amount_nano, entries.account_id == account_id, entries.kind == "credit")
        .label("credits"),
        total(-entries.amount_nano, entries.account_id == account_id, entries.kind == "debit")
        .label("debits"),
        total(usage_records.c.cost_nano, usage_records.c.account_id == account_id).label("cost"),
        select(func.count()).where(usage_records.c.account_id == account_id)
        .scalar_subquery().label("records"),
        select(func.count()).where(holds.c.account_id == account_id, holds.c.state == "open")
        .scalar_subquery().label("open"),
        total(holds.c.amount_nano, holds.c.account_id == account_id, holds.c.state == "open")
        .label("open_held"),
        select(func.count()).where(holds.c.account_id == account_id)
        .scalar_subquery().label("holds"),
    ).where(accounts.c.id == account_id)  # fmt: skip


async def _books(url: str, account: str) -> LedgerState:
    from teegate.store import AccountStore, create_engine

    engine = create_engine(url)
    try:
        found = await AccountStore(engine).get_account(account)
        return await ledger_state(engine, found.id)
    finally:
        await engine.dispose()


def books(url: str, account: str) -> LedgerState:
    """An account's books, read from a synchronous test."""
    return asyncio.run(_books(url, account))


def settled_books(url: str, account: str, timeout_s: float = 10) -> LedgerState:
    """The books once no hold is open: an answer is settled just after it is sent,
    so a test that reads the tables straight after its last answer waits for that."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = books(url, account)
        if state.open_holds == 0:
            return state
        assert time.monotonic() < deadline, f"holds still open: {state}"
        time.sleep(0.05)


class TcpProxy:
    """A loopback TCP forwarder whose `cut()` is a database outage: every connection
    drops and new ones are refused, until `restore()`. `stall()` is a network
    partition instead: connections are accepted and kept, but nothing is forwarded
    either way (no reset, no refusal) until `resume()`. Every byte it forwards, either
    way, is kept in `recorded` (a wire capture for confidentiality tests)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self._target = (target_host, target_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self.recorded = bytearray()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)

    async def _start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return int(self._server.sockets[0].getsockname()[1])

    def restore(self) -> None:
        """The database is back: listen again on the same port."""
        asyncio.run_coroutine_threadsafe(self._start(self.port), self._loop).result(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.add(up_writer)
        await asyncio.gather(
            _pipe(reader, up_writer, self._flowing, self.recorded),
            _pipe(up_reader, writer, self._flowing, self.recorded),
        )

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def cut(self) -> None:
        async def cut() -> None:
            assert self._server is not None
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()

        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(5)

    def close(self) -> None:
        self.resume()
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    flowing: asyncio.Event,
    recorded: bytearray,
) -> None:
    try:
        while data := await reader.read(65536):
            await flowing.wait()
            recorded += data
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


def settled_generation(
    gateway_url: str, key: str, request_id: str, timeout_s: float = 10
) -> dict[str, Any]:
    """`GET /v1/generation` for a request, once it is settled: an answer is settled just
    after its last byte, so its record may still be missing (404) for a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(
            f"{gateway_url}/v1/generation",
            headers={"Authorization": f"Bearer {key}"},
            params={"id": request_id},
        )
        if response.status_code == 200:
            data: dict[str, Any] = response.json()["data"]
            return data
        assert response.status_code == 404, response.text
        assert time.monotonic() < deadline, f"{request_id} was never settled"
        time.sleep(0.02)
