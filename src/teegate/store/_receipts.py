"""The transparency log's leaves, signed receipts and receipt keys
(`receipts.ReceiptStore`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from teegate.receipts import LogEntry, StoredKey, StoredReceipt
from teegate.store._outage import outage_as_unavailable
from teegate.store._schema import receipt_keys, receipts, transparency_leaves

LOG_LOCK = 0x7465656C6F67
"""PostgreSQL advisory lock key ('teelog') that serializes appends across replicas."""


class ReceiptLog:
    """One log for every replica: an append reads the next index and inserts under a
    lock held to its commit, so two replicas never take the same index."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def append(
        self, entries: Sequence[LogEntry], receipts_: Sequence[StoredReceipt]
    ) -> list[int]:
        async with outage_as_unavailable(), self.engine.begin() as conn:
            indices = await self._append(conn, entries) if entries else []
            if receipts_:
                await conn.execute(
                    insert(receipts),
                    [
                        {
                            "id": r.id,
                            "account_id": r.account_id,
                            "request_id": r.request_id,
                            "created_ms": r.created_ms,
                            "signed": r.signed,
                        }
                        for r in receipts_
                    ],
                )
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
        rows = []
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
