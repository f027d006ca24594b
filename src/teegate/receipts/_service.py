"""Issuing receipts and keeping the transparency log, off the request path.

The request path only allocates a receipt id (it goes out in `X-TEE-Receipt` with the
headers) and hashes bytes as they pass. Once the answer is sent and settled, `issue`
hands the rest to a task: look up (or append) the verdict's leaf, build the receipt
and queue it. One writer task signs the queued receipts with one signature per batch
(a Merkle tree over them, `sign_batch`), then appends queued leaves and saves the
receipts in one transaction.

The log is one table however many replicas write it: each keeps a mirror of the leaf
hashes, read forward from the store before it answers with a tree head or a proof.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog

from teegate.attestation import REPORT_DATA_RULE, TsmReport, Verdict, gateway_report_data
from teegate.errors import InvalidRequest, NotAvailable, NotFound
from teegate.receipts._ear import ear_jwt
from teegate.receipts._merkle import consistency_proof, inclusion_proof, leaf_hash, root
from teegate.receipts._receipt import Served, receipt_body, verdict_entry
from teegate.receipts._signing import TREE_HEAD_CONTEXT, SigningKey, b64, canonical, sign_batch
from teegate.receipts._store import LogEntry, ReceiptStore, StoredKey, StoredReceipt

log = structlog.get_logger("teegate.receipts")

MAX_LEAVES_PAGE = 1000
MAX_REMEMBERED_VERDICTS = 4096
BATCH_WINDOW_S = 0.005
"""How long the writer waits after the first queued item for others to join its batch."""


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def new_receipt_id() -> str:
    return "rcpt_" + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class _Unsigned:
    """A receipt built and waiting for its batch's signature: `data` is its body, canonical."""

    receipt_id: str
    account_id: int
    request_id: str
    created_ms: int
    data: bytes


@dataclass(slots=True)
class _Batch:
    entries: list[LogEntry] = field(default_factory=list)
    waiters: list[asyncio.Future[int]] = field(default_factory=list)
    receipts: list[_Unsigned] = field(default_factory=list)


class TransparencyLog:
    """The append-only Merkle log of verdicts and receipt keys, and its signed heads."""

    def __init__(self, store: ReceiptStore, *, clock: Callable[[], int] = wall_ms) -> None:
        self._store = store
        self._clock = clock
        self._hashes: list[bytes] = []
        self._sync_lock = asyncio.Lock()
        self._head: dict[str, Any] | None = None
        self._key: SigningKey | None = None

    def use_key(self, key: SigningKey) -> None:
        self._key = key

    async def sync(self) -> int:
        """Read the leaves appended since the last look (by any replica); the size."""
        async with self._sync_lock:
            self._hashes += await self._store.leaf_hashes(len(self._hashes))
            return len(self._hashes)

    async def tree_head(self) -> dict[str, Any]:
        """The signed tree head over every leaf stored now. `log_id` (leaf 0's hash) names
        the log, so a client keeps one last-seen head per log, whichever replica
        or address answered."""
        size = await self.sync()
        head = self._head
        if head is None or head["tree_head"]["tree_size"] != size:
            if self._key is None:
                raise NotFound("the transparency log has no signing key yet")
            body = {
                "log_id": b64(self._hashes[0]) if size else None,
                "tree_size": size,
                "root_hash": b64(root(self._hashes[:size])),
                "timestamp_ms": self._clock(),
            }
            head = {"tree_head": body, "signature": self._key.sign(TREE_HEAD_CONTEXT, body)}
            self._head = head
        return head

    async def inclusion(self, leaf: int, tree_size: int | None) -> dict[str, Any]:
        size = await self._size(tree_size, "tree_size")
        if not 0 <= leaf < size:
            raise InvalidRequest(
                f"leaf must be an index below the tree size {size}; got {leaf}.", param="leaf"
            )
        hashes = self._hashes[:size]
        return {
            "leaf_index": leaf,
            "tree_size": size,
            "leaf_hash": b64(hashes[leaf]),
            "audit_path": [b64(h) for h in inclusion_proof(leaf, hashes)],
        }

    async def consistency(self, first: int, second: int | None) -> dict[str, Any]:
        size = await self._size(second, "to")
        if not 0 <= first <= size:
            raise InvalidRequest(
                f"from must be between 0 and to ({size}); got {first}.", param="from"
            )
        return {
            "from": first,
            "to": size,
            "proof": [b64(h) for h in consistency_proof(first, self._hashes[:size])],
        }

    async def leaves(self, start: int, end: int) -> dict[str, Any]:
        size = await self.sync()
        if not 0 <= start < end <= size or end - start > MAX_LEAVES_PAGE:
            raise InvalidRequest(
                f"start and end must satisfy 0 <= start < end <= {size} (the tree size) "
                f"and end - start <= {MAX_LEAVES_PAGE}; got start={start}, end={end}.",
                param="start",
            )
        datas = await self._store.leaves(start, end)
        return {
            "start": start,
            "end": end,
            "leaves": [
                {"index": start + i, "data": b64(data), "entry": orjson.loads(data)}
                for i, data in enumerate(datas)
            ],
        }

    async def attestation_result(self, leaf: int) -> dict[str, Any]:
        """The verdict at `leaf` as an EAR JWT signed now by the receipt key."""
        size = await self.sync()
        if not 0 <= leaf < size:
            raise InvalidRequest(
                f"leaf must be an index below the tree size {size}; got {leaf}.", param="leaf"
            )
        (data,) = await self._store.leaves(leaf, leaf + 1)
        entry = orjson.loads(data)
        if entry.get("type") != "verdict" or self._key is None:
            raise InvalidRequest(f"leaf {leaf} is not a verdict.", param="leaf")
        return {
            "object": "attestation.ear",
            "leaf_index": leaf,
            "verdict_id": entry["id"],
            "ear": ear_jwt(entry, self._key),
        }

    async def _size(self, requested: int | None, param: str) -> int:
        size = await self.sync()
        if requested is None:
            return size
        if not 0 <= requested <= size:
            raise InvalidRequest(
                f"{param} must be between 0 and the tree size ({size}); got {requested}.",
                param=param,
            )
        return requested


class Quoter(Protocol):
    """The gateway's own TEE (met by `attestation.ConfigfsTsm`; blocking)."""

    def report(self, report_data: bytes) -> TsmReport: ...


class ReceiptService:
    """Signs and stores a receipt for every answer; reads them back for their owner."""

    def __init__(
        self,
        store: ReceiptStore,
        *,
        account_secret: bytes,
        quoter: Quoter | None = None,
        clock: Callable[[], int] = wall_ms,
        batch_window_s: float = BATCH_WINDOW_S,
    ) -> None:
        self._store = store
        self._account_secret = account_secret
        self._quoter = quoter
        self._clock = clock
        self._batch_window_s = batch_window_s
        self.log = TransparencyLog(store, clock=clock)
        self._key: SigningKey | None = None
        self._key_leaf: int | None = None
        self._verdict_leaves: dict[str, asyncio.Future[int]] = {}
        self._verdict_entries: dict[str, bytes] = {}
        """Each verdict's entry, canonical: its leaf's data, and its part of every receipt."""
        self._batch = _Batch()
        self._wake = asyncio.Event()
        self._issuing: set[asyncio.Task[None]] = set()
        self._writing = asyncio.Lock()

    @property
    def key(self) -> SigningKey:
        if self._key is None:
            raise RuntimeError("ReceiptService.start() has not run")
        return self._key

    async def start(self) -> None:
        """Take the newest receipt key (making the first if there is none) and log it."""
        keys = await self._store.signing_keys()
        if not keys:
            created = self._clock()
            await self._store.add_signing_key(
                StoredKey(SigningKey.generate(created).raw(), created)
            )
            keys = await self._store.signing_keys()
        newest = keys[-1]
        self._key = SigningKey.from_raw(newest.private_key, newest.created_ms)
        self.log.use_key(self._key)
        waiter = self._queue_entry(f"key:{self._key.id}", canonical(self._key.describe()))
        await self.flush()
        self._key_leaf = await waiter

    # The request path: nothing here waits.

    def allocate(self) -> str:
        return new_receipt_id()

    def issue(self, served: Served) -> None:
        """Build and queue the receipt (for its batch's signature) in a task of its own;
        never raises."""
        task = asyncio.ensure_future(self._issue(served))
        self._issuing.add(task)
        task.add_done_callback(self._issuing.discard)

    # Off the request path.

    def note_verdict(self, verdict: Verdict) -> None:
        """Append an accepted verdict to the log (once, however often it is noted)."""
        self._verdict_leaf(verdict)

    async def _issue(self, served: Served) -> None:
        try:
            verdict = served.admitted.attestation.verdict
            entry = self._verdict_entry(verdict) if verdict is not None else None
            leaf = await self._verdict_leaf(verdict) if verdict is not None else None
            key = self.key
            body = receipt_body(
                served,
                account=self.account_id(served.settlement.hold.account_id),
                # the same bytes as its leaf, encoded once per verdict
                verdict=orjson.Fragment(entry) if entry is not None else None,
                verdict_leaf=leaf,
            )
            body["key"] = {"id": key.id, "leaf_index": self._key_leaf}
            hold = served.settlement.hold
            self._batch.receipts.append(
                _Unsigned(
                    served.receipt_id,
                    hold.account_id,
                    hold.request_id,
                    served.finished_ms,
                    canonical(body),
                )
            )
            self._wake.set()
        except Exception as exc:  # the answer is out; a receipt lost is logged, not raised
            log.error("receipt_failed", receipt_id=served.receipt_id, error=type(exc).__name__)

    def _verdict_leaf(self, verdict: Verdict) -> asyncio.Future[int]:
        waiter = self._verdict_leaves.get(verdict.id)
        if waiter is None or (waiter.done() and waiter.exception() is not None):
            waiter = self._queue_entry(f"verdict:{verdict.id}", self._verdict_entry(verdict))
            self._verdict_leaves[verdict.id] = waiter
        return waiter

    def _verdict_entry(self, verdict: Verdict) -> bytes:
        """Built once per verdict (it hashes the quote), kept while the verdict may be
        relied on: entries of verdicts long expired are dropped as new ones come."""
        entry = self._verdict_entries.get(verdict.id)
        if entry is None:
            entry = self._verdict_entries[verdict.id] = canonical(verdict_entry(verdict))
            if len(self._verdict_entries) > MAX_REMEMBERED_VERDICTS:
                self._forget_oldest_verdicts()
        return entry

    def _forget_oldest_verdicts(self) -> None:
        """Insertion order is acceptance order: the oldest half goes (a verdict seen
        again is appended again by entry id, which the store answers with its index)."""
        for verdict_id in list(self._verdict_entries)[: MAX_REMEMBERED_VERDICTS // 2]:
            self._verdict_entries.pop(verdict_id, None)
            self._verdict_leaves.pop(verdict_id, None)

    def _queue_entry(self, entry_id: str, data: bytes) -> asyncio.Future[int]:
        """Queue a leaf: `data` is its entry, canonical."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._batch.entries.append(LogEntry(entry_id, data, leaf_hash(data)))
        self._batch.waiters.append(waiter)
        self._wake.set()
        return waiter

    def account_id(self, account_id: int) -> str:
        """The account as receipts name it: opaque, the same in every receipt of it."""
        mac = hmac.new(self._account_secret, b"teegate account %d" % account_id, hashlib.sha256)
        return "acct_" + mac.hexdigest()[:32]

    async def run(self) -> None:
        """The writer: one signature and one transaction per batch of queued leaves and
        receipts."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._batch_window_s)
            await self.flush()

    async def flush(self) -> None:
        """Sign the receipts queued now as one batch and write everything queued (after
        the receipts being built are queued). A batch that fails to sign or to store is
        logged whole, by the error's class: never its content."""
        async with self._writing:
            self._wake.clear()
            batch, self._batch = self._batch, _Batch()
            if not batch.entries and not batch.receipts:
                return
            try:
                receipts = self._signed(batch.receipts)
                indices = await self._store.append(batch.entries, receipts)
            except Exception as exc:
                log.error(
                    "receipt_batch_failed",
                    error=type(exc).__name__,
                    receipts=len(batch.receipts),
                    leaves=len(batch.entries),
                )
                for waiter in batch.waiters:
                    waiter.set_exception(exc)
                    waiter.exception()  # retrieved: the next use queues it again
                return
            for waiter, index in zip(batch.waiters, indices, strict=True):
                waiter.set_result(index)

    def _signed(self, unsigned: list[_Unsigned]) -> list[StoredReceipt]:
        if not unsigned:
            return []
        signatures = sign_batch(self.key, [receipt.data for receipt in unsigned])
        return [
            StoredReceipt(
                receipt.receipt_id,
                receipt.account_id,
                receipt.request_id,
                receipt.created_ms,
                canonical({"receipt": orjson.Fragment(receipt.data), "signature": signature}),
            )
            for receipt, signature in zip(unsigned, signatures, strict=True)
        ]

    async def drain(self) -> None:
        """Issue and write everything under way (at shutdown, and for tests)."""
        while self._issuing:
            await asyncio.wait(list(self._issuing))
        await self.flush()

    async def gateway_evidence(self, nonce: bytes) -> dict[str, Any]:
        """The gateway's TDX quote binding its current receipt key and `nonce`: what
        lets a client trust the key without pinning it."""
        if self._quoter is None:
            raise NotAvailable("This gateway has no TEE to attest itself with.")
        key = self.key
        report = await asyncio.to_thread(
            self._quoter.report, gateway_report_data(key.public, nonce)
        )
        return {
            "object": "attestation.gateway",
            "tee": "tdx",
            "provider": report.provider,
            "nonce": nonce.hex(),
            "quote": b64(report.quote),
            "report_data_rule": REPORT_DATA_RULE,
            "receipt_key": {"key_id": key.id, "public_key": b64(key.public)},
        }

    async def receipt_for(self, receipt_id: str, account_id: int) -> dict[str, Any]:
        """The signed receipt if it exists and belongs to `account_id` (a receipt of
        another account is as absent as one never issued)."""
        stored = await self._store.receipt(receipt_id)
        if stored is None or stored.account_id != account_id:
            raise NotFound(
                f"No receipt '{receipt_id}' for this account. A receipt is stored a few "
                "milliseconds after its answer ends: retry shortly if it was just issued.",
                param="id",
            )
        result: dict[str, Any] = orjson.loads(stored.signed)
        return result
