"""The transparency log's leaves, signed receipts and receipt keys
(`receipts.ReceiptStore`)."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from teegate.receipts import LogEntry, StoredKey, StoredReceipt
from teegate.store._outage import outage_as_unavailable
from teegate.store._schema import receipt_keys, receipts, transparency_leaves
from teegate.store._sqlite_writer import SqliteWriter
from teegate.store._writers import Writer

LOG_LOCK = 0x7465656C6F67
"""PostgreSQL advisory lock key ('teelog') that serializes appends across replicas."""


class ReceiptLog:
    """One log for every replica: an append reads the next index and inserts under a
    lock held to its commit, so two replicas never take the same index.

    On SQLite, pass the ledger's writer: appends then run on its connection, inline,
    so a batch of receipts never holds the write lock a request's hold is waiting for.
    """

    def __init__(self, engine: AsyncEngine, *, writer: Writer | None = None) -> None:
        self.engine = engine
        self._sqlite = writer if isinstance(writer, SqliteWriter) else None

    async def append(
        self, entries: Sequence[LogEntry], receipts_: Sequence[StoredReceipt]
    ) -> list[int]:
        if self._sqlite is not None:
            return await self._sqlite.run(functools.partial(_append_sqlite, entries, receipts_))
        async with outage_as_unavailable(), self.engine.begin() as conn:
            indices = await self._append(conn, entries) if entries else []
            if receipts_:
                await conn.execute(insert(receipts), [_receipt_row(r) for r in receipts_])
            return indices

    async def _append(self, conn: AsyncConnection, entries: Sequence[LogEntry]) -> list[int]:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOG_LOCK})
        else:  # SQLite: take the write lock now, before reading the next index
            await conn.execute(text("UPDATE receipt_keys SET id = id WHERE 0"))
        ids = [e.entry_id for e in entries]
        known = dict(
            (
                await conn.execute(
                    select(transparency_leaves.c.entry_id, transparency_leaves.c.idx).where(
                        transparency_leaves.c.entry_id.in_(ids)
                    )
                )
            ).all()
        )
        size = (
            await conn.execute(select(func.coalesce(func.max(transparency_leaves.c.idx) + 1, 0)))
        ).scalar_one()
        rows = _new_leaves(entries, known, size)
        if rows:
            await conn.execute(insert(transparency_leaves), rows)
        return [int(known[entry_id]) for entry_id in ids]

    async def leaf_hashes(self, start: int) -> list[bytes]:
        query = (
            select(transparency_leaves.c.leaf_hash)
            .where(transparency_leaves.c.idx >= start)
            .order_by(transparency_leaves.c.idx)
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            return [bytes(h) for h in (await conn.execute(query)).scalars()]

    async def leaves(self, start: int, end: int) -> list[bytes]:
        query = (
            select(transparency_leaves.c.data)
            .where(transparency_leaves.c.idx >= start, transparency_leaves.c.idx < end)
            .order_by(transparency_leaves.c.idx)
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            return [bytes(d) for d in (await conn.execute(query)).scalars()]

    async def receipt(self, receipt_id: str) -> StoredReceipt | None:
        query = select(
            receipts.c.id,
            receipts.c.account_id,
            receipts.c.request_id,
            receipts.c.created_ms,
            receipts.c.signed,
        ).where(receipts.c.id == receipt_id)
        async with outage_as_unavailable(), self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return StoredReceipt(
            row.id, row.account_id, row.request_id, row.created_ms, bytes(row.signed)
        )

    async def signing_keys(self) -> list[StoredKey]:
        query = select(receipt_keys.c.private_key, receipt_keys.c.created_ms).order_by(
            receipt_keys.c.id
        )
        async with outage_as_unavailable(), self.engine.connect() as conn:
            return [StoredKey(bytes(k), c) for k, c in (await conn.execute(query)).all()]

    async def add_signing_key(self, key: StoredKey) -> None:
        async with outage_as_unavailable(), self.engine.begin() as conn:
            await conn.execute(
                insert(receipt_keys).values(private_key=key.private_key, created_ms=key.created_ms)
            )


def _new_leaves(
    entries: Sequence[LogEntry], known: dict[str, int], size: int
) -> list[dict[str, object]]:
    """Rows for the entries not in the log yet, at the next indices from `size`;
    `known` gains their indices."""
    rows: list[dict[str, object]] = []
    now = time.time_ns() // 1_000_000
    for entry in entries:
        if entry.entry_id not in known:
            known[entry.entry_id] = size
            rows.append(
                {
                    "idx": size,
                    "entry_id": entry.entry_id,
                    "leaf_hash": entry.leaf_hash,
                    "data": entry.data,
                    "created_ms": now,
                }
            )
            size += 1
    return rows


def _receipt_row(receipt: StoredReceipt) -> dict[str, object]:
    return {
        "id": receipt.id,
        "account_id": receipt.account_id,
        "request_id": receipt.request_id,
        "created_ms": receipt.created_ms,
        "signed": receipt.signed,
    }


_LEAF_COLUMNS = ("idx", "entry_id", "leaf_hash", "data", "created_ms")
_RECEIPT_COLUMNS = ("id", "account_id", "request_id", "created_ms", "signed")
_INSERT_LEAF = (
    f"INSERT INTO transparency_leaves ({', '.join(_LEAF_COLUMNS)})"  # noqa: S608 (constants)
    f" VALUES ({', '.join(':' + c for c in _LEAF_COLUMNS)})"
)
_INSERT_RECEIPT = (
    f"INSERT INTO receipts ({', '.join(_RECEIPT_COLUMNS)})"  # noqa: S608 (constants)
    f" VALUES ({', '.join(':' + c for c in _RECEIPT_COLUMNS)})"
)
_NEXT_INDEX = "SELECT coalesce(max(idx) + 1, 0) FROM transparency_leaves"


def _append_sqlite(
    entries: Sequence[LogEntry], receipts_: Sequence[StoredReceipt], conn: sqlite3.Connection
) -> list[int]:
    """The append as plain SQL in the SQLite writer's transaction (which holds the
    write lock from its BEGIN IMMEDIATE: no other append can take the same index)."""
    indices: list[int] = []
    if entries:
        ids = [e.entry_id for e in entries]
        marks = ", ".join("?" * len(ids))
        known: dict[str, int] = dict(
            conn.execute(
                f"SELECT entry_id, idx FROM transparency_leaves WHERE entry_id IN ({marks})",  # noqa: S608
                ids,
            ).fetchall()
        )
        (size,) = conn.execute(_NEXT_INDEX).fetchone()
        conn.executemany(_INSERT_LEAF, _new_leaves(entries, known, size))
        indices = [known[entry_id] for entry_id in ids]
    if receipts_:
        conn.executemany(_INSERT_RECEIPT, [_receipt_row(r) for r in receipts_])
    return indices
