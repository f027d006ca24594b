"""What receipts need of storage (met by `teegate.store.ReceiptLog`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One leaf to append: `entry_id` names it once ("verdict:<id>", "key:<id>"), so
    appending it again returns its first index; `data` is its canonical JSON."""

    entry_id: str
    data: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    id: str
    account_id: int
    request_id: str
    created_ms: int
    signed: bytes
    """The signed receipt, canonical JSON: hashes and counts only, never text."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    private_key: bytes
    created_ms: int


class ReceiptStore(Protocol):
    async def append(
        self, entries: Sequence[LogEntry], receipts: Sequence[StoredReceipt]
    ) -> list[int]:
        """In one transaction: the entries not in the log yet take the next indices (one
        log however many replicas append), receipts are saved; each entry's index."""
        ...

    async def leaf_hashes(self, start: int) -> list[bytes]:
        """The leaf hashes from index `start` on, in order."""
        ...

    async def leaves(self, start: int, end: int) -> list[bytes]:
        """The entries' data for indices start..end-1."""
        ...

    async def receipt(self, receipt_id: str) -> StoredReceipt | None: ...

    async def signing_keys(self) -> list[StoredKey]:
        """Every receipt key, oldest first."""
        ...

    async def add_signing_key(self, key: StoredKey) -> None: ...
