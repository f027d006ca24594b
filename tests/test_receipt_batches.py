"""Receipts are signed a batch at a time: one Ed25519 signature over the Merkle root of
the batch, shared by every receipt in it, each receipt carrying its own audit path. The
client's `signature` step checks both, and one flipped byte of the receipt, its path,
its index or the batch's size fails it; a receipt signed alone, before batches, still
verifies."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from teegate.billing import settlement_for
from teegate.catalog import Admitted, AttestationStatus
from teegate.receipts import (
    BATCH_HEAD_CONTEXT,
    RECEIPT_CONTEXT,
    RECEIPT_V1_CONTEXT,
    RECEIPT_VERSION,
    TREE_HEAD_CONTEXT,
    ReceiptService,
    Served,
    SigningKey,
    b64,
    canonical,
    leaf_hash,
    root,
    sign_batch,
    unb64,
    verify_receipt_signature,
    verify_signature,
)
from teegate.verify import Evidence, State, check
from tests.support.factories import catalog_model
from tests.support.ledger import a_hold
from tests.support.receipts import MemoryReceiptStore


def served(n: int) -> Served:
    hold = a_hold(1, f"req_{n}")
    return Served(
        receipt_id=f"rcpt_{n:032x}",
        request_sha256=bytes([n]) * 32,
        response_sha256=bytes([n + 1]) * 32,
        response_bytes=100 + n,
        admitted=Admitted(catalog_model("m/x-TEE"), AttestationStatus(passed=True, mode="none")),
        settlement=settlement_for(hold, status="ok", usage=None, output_bytes=400, now_ms=5),
        usage=None,
        policy=None,
        finished_ms=5,
    )


async def issued(count: int) -> tuple[SigningKey, list[dict[str, Any]]]:
    """`count` receipts issued together: one batch, as the writer would flush it."""
    store = MemoryReceiptStore()
    service = ReceiptService(store, account_secret=b"test")
    await service.start()
    for n in range(count):
        service.issue(served(n))
    await service.drain()
    return service.key, [orjson.loads(r.signed) for r in store.receipts]


def pinned(key: SigningKey) -> State:
    state = State()
    state.pin([b64(key.public)])
    return state


def signature_step(receipt: dict[str, Any], key: SigningKey) -> str:
    """The `signature` step's outcome, as `teegate verify` runs it."""
    (step,) = (s for s in check(Evidence(receipt, {}), pinned(key)).steps if s.name == "signature")
    return step.outcome


def flip_b64(text: str, at: int = 0) -> str:
    data = unb64(text)
    return b64(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])


async def test_a_batch_is_signed_once_and_each_receipt_carries_its_own_path() -> None:
    key, receipts = await issued(6)
    assert len(receipts) == 6
    signatures = [r["signature"] for r in receipts]
    assert len({s["value"] for s in signatures}) == 1
    assert {s["key_id"] for s in signatures} == {key.id}
    assert [s["batch"]["leaf_index"] for s in signatures] == list(range(6))
    assert {s["batch"]["tree_size"] for s in signatures} == {6}
    assert len({tuple(s["batch"]["audit_path"]) for s in signatures}) == 6
    leaves = [leaf_hash(RECEIPT_CONTEXT + canonical(r["receipt"])) for r in receipts]
    head = {"tree_size": 6, "root_hash": b64(root(leaves))}
    assert verify_signature(key.public, BATCH_HEAD_CONTEXT, head, signatures[0]["value"])
    for receipt in receipts:
        assert receipt["receipt"]["version"] == RECEIPT_VERSION == 2
        assert verify_receipt_signature(key.public, receipt["receipt"], receipt["signature"])
        assert signature_step(receipt, key) == "passed"


async def test_a_batch_of_one_is_a_tree_of_one() -> None:
    key, (receipt,) = await issued(1)
    assert receipt["signature"]["batch"] == {"tree_size": 1, "leaf_index": 0, "audit_path": []}
    assert signature_step(receipt, key) == "passed"


def changed(receipt: dict[str, Any], part: str, **values: Any) -> dict[str, Any]:
    """A copy of `receipt` with `values` set in one part: "receipt", "signature" or "batch"."""
    copied = copy.deepcopy(receipt)
    target = copied["signature"]["batch"] if part == "batch" else copied[part]
    target.update(values)
    return copied


async def test_one_flipped_byte_of_the_receipt_path_index_or_size_fails_the_step() -> None:
    key, receipts = await issued(5)
    receipt = receipts[2]
    body, signature = receipt["receipt"], receipt["signature"]
    batch = signature["batch"]
    path = batch["audit_path"]
    assert signature_step(receipt, key) == "passed" and len(path) == 3
    unbatched = copy.deepcopy(receipt)  # the batch's signature is no receipt's own
    del unbatched["signature"]["batch"]
    forgeries = [
        unbatched,
        changed(receipt, "receipt", cost_nano_usd=body["cost_nano_usd"] - 1),
        changed(receipt, "receipt", response_sha256="00" + body["response_sha256"][2:]),
        changed(receipt, "receipt", version=1),
        changed(receipt, "batch", leaf_index=batch["leaf_index"] ^ 1),
        changed(receipt, "batch", leaf_index=batch["leaf_index"] + 4),
        changed(receipt, "batch", tree_size=6),  # the same root as 5: the head holds the size
        changed(receipt, "batch", tree_size=4),
        changed(receipt, "batch", audit_path=path[:-1]),
        changed(receipt, "batch", audit_path=[*path, b64(bytes(32))]),
        changed(receipt, "batch", audit_path=receipts[3]["signature"]["batch"]["audit_path"]),
        changed(receipt, "batch", audit_path=["not base64!"]),
        changed(receipt, "signature", value=flip_b64(signature["value"])),
        changed(receipt, "signature", alg="EdDSA"),
    ]
    for i, element in enumerate(path):
        forgeries += [
            changed(receipt, "batch", audit_path=[*path[:i], flip_b64(element, at), *path[i + 1 :]])
            for at in range(32)
        ]
    for number, forgery in enumerate(forgeries):
        assert signature_step(forgery, key) == "failed", number


def test_a_receipt_signed_alone_before_batches_still_verifies() -> None:
    key = SigningKey.generate(0)
    body = {"version": 1, "id": "rcpt_old", "cost_nano_usd": 1234, "key": {"id": key.id}}
    receipt: dict[str, Any] = {"receipt": body, "signature": key.sign(RECEIPT_V1_CONTEXT, body)}
    assert "batch" not in receipt["signature"]
    assert signature_step(receipt, key) == "passed"
    altered = copy.deepcopy(receipt)
    altered["receipt"]["cost_nano_usd"] += 1
    assert signature_step(altered, key) == "failed"
    for context in (RECEIPT_CONTEXT, BATCH_HEAD_CONTEXT, TREE_HEAD_CONTEXT):
        other = {"receipt": body, "signature": key.sign(context, body)}
        assert signature_step(other, key) == "failed"
    grafted = copy.deepcopy(receipt)  # a v1 signature presented as a batch of one
    grafted["signature"]["batch"] = {"tree_size": 1, "leaf_index": 0, "audit_path": []}
    assert signature_step(grafted, key) == "failed"


def test_a_batch_signed_by_another_key_fails() -> None:
    key, forger = SigningKey.generate(0), SigningKey.generate(0)
    body = {"version": 2, "id": "rcpt_x", "key": {"id": key.id}}
    (signature,) = sign_batch(forger, [canonical(body)])
    forged = {"receipt": body, "signature": signature | {"key_id": key.id}}
    assert signature_step(forged, key) == "failed"


async def test_a_batch_that_fails_to_sign_is_logged_by_its_error_class_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryReceiptStore()
    service = ReceiptService(store, account_secret=b"test")
    await service.start()

    def broken(self: SigningKey, context: bytes, value: Any) -> dict[str, str]:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(SigningKey, "sign", broken)
    with capture_logs() as logs:
        for n in range(3):
            service.issue(served(n))
        await service.drain()
    assert store.receipts == []
    (failure,) = [entry for entry in logs if entry["event"] == "receipt_batch_failed"]
    assert failure == {
        "event": "receipt_batch_failed",
        "log_level": "error",
        "error": "RuntimeError",
        "receipts": 3,
        "leaves": 0,
    }
