"""The receipts' store, minus the database: for tests and bench/receipts.py."""

from __future__ import annotations

from collections.abc import Sequence

from teegate.receipts import LogEntry, StoredKey, StoredReceipt


class MemoryReceiptStore:
    """Meets `receipts.ReceiptStore` in memory: leaves, receipts and keys in lists."""

    def __init__(self) -> None:
        self.keys: list[StoredKey] = []
        self.receipts: list[StoredReceipt] = []
        self.entries: list[LogEntry] = []

    async def append(
        self, entries: Sequence[LogEntry], receipts: Sequence[StoredReceipt]
    ) -> list[int]:
        start = len(self.entries)
        self.entries += entries
        self.receipts += receipts
        return list(range(start, start + len(entries)))

    async def leaf_hashes(self, start: int) -> list[bytes]:
        return [entry.leaf_hash for entry in self.entries[start:]]

    async def leaves(self, start: int, end: int) -> list[bytes]:
        return [entry.data for entry in self.entries[start:end]]

    async def receipt(self, receipt_id: str) -> StoredReceipt | None:
        return next((r for r in self.receipts if r.id == receipt_id), None)

    async def signing_keys(self) -> list[StoredKey]:
        return self.keys

    async def add_signing_key(self, key: StoredKey) -> None:
        self.keys.append(key)
