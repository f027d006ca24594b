"""The receipt key, the one canonical encoding everything signed goes through, and
the batch heads that sign many receipts at once.

Signed bytes are a context line (what the bytes are, so a receipt batch can never pass
for a tree head or the other way round) followed by the RFC 8785 (JSON Canonicalization
Scheme) encoding of the object: any client with a JCS library re-derives them from
the JSON it received.

Receipts are signed a batch at a time, as Certificate Transparency signs a tree head
over many entries: one Ed25519 signature over the Merkle root of the batch's receipts,
and each receipt carries the audit path from its own leaf to that root. Receipts
issued before batches (no `batch` member) were signed one by one, and still verify.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from teegate.receipts._merkle import inclusion_root, leaf_hash, root_and_paths

RECEIPT_CONTEXT = b"teegate receipt v2\n"
"""Prefixes a receipt's canonical bytes in its leaf of the batch's tree."""
RECEIPT_V1_CONTEXT = b"teegate receipt v1\n"
"""What receipts signed one by one were signed under (before batches)."""
BATCH_HEAD_CONTEXT = b"teegate receipt batch v1\n"
TREE_HEAD_CONTEXT = b"teegate tree head v1\n"


MAX_EXACT_INT = 2**53 - 1


def canonical(value: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of a JSON object (integers must stay within ±(2^53 - 1)).

    The objects teegate signs hold strings, integers, booleans and nulls under ASCII
    keys. For those, RFC 8785 is orjson's compact output with sorted keys: ASCII keys
    sort the same by UTF-16 unit as by code point, strings are escaped as ECMAScript
    does, and integers print as they are. That path is some hundred times faster than
    the `rfc8785` package, which encodes everything else (floats, non-ASCII keys), and
    refuses what JCS cannot represent; tests hold the two equal.

    An `orjson.Fragment` inside `value` is taken as already canonical (it must come
    from this function): a part signed again and again is encoded once.
    """
    if _plain(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return rfc8785.dumps(_unfragmented(value))


def _unfragmented(value: Any) -> Any:
    """`value` with each `orjson.Fragment` decoded again, for the `rfc8785` package."""
    if isinstance(value, orjson.Fragment):
        return orjson.loads(orjson.dumps(value))
    if isinstance(value, dict):
        return {k: _unfragmented(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unfragmented(v) for v in value]
    return value


def _plain(value: object) -> bool:
    """Only strings, booleans, nulls, exact integers, lists, and objects with ASCII keys."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (str, bool, orjson.Fragment)):
            continue
        if isinstance(item, int):
            if not -MAX_EXACT_INT <= item <= MAX_EXACT_INT:
                return False
        elif isinstance(item, dict):
            if not all(isinstance(k, str) and k.isascii() for k in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            return False
    return True


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def key_id(public_key: bytes) -> str:
    """The first 16 bytes of SHA-256 of the raw public key, in hex."""
    return hashlib.sha256(public_key).hexdigest()[:32]


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 receipt key: the newest one signs; older ones stay listed (overlap)."""

    private: Ed25519PrivateKey = field(repr=False)
    created_ms: int
    public: bytes = field(init=False)
    id: str = field(init=False)

    def __post_init__(self) -> None:
        public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "id", key_id(public))

    @classmethod
    def generate(cls, created_ms: int) -> SigningKey:
        return cls(Ed25519PrivateKey.generate(), created_ms)

    @classmethod
    def from_raw(cls, raw: bytes, created_ms: int) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(raw), created_ms)

    def raw(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, context: bytes, value: Mapping[str, Any]) -> dict[str, str]:
        signature = self.private.sign(context + canonical(value))
        return {"alg": "Ed25519", "key_id": self.id, "value": b64(signature)}

    def describe(self) -> dict[str, Any]:
        """The key as the transparency log records it (its leaf)."""
        return {
            "type": "receipt_key",
            "alg": "Ed25519",
            "key_id": self.id,
            "public_key": b64(self.public),
            "created_ms": self.created_ms,
        }


def verify_signature(
    public_key: bytes, context: bytes, value: Mapping[str, Any], signature: str
) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            unb64(signature), context + canonical(value)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_signed(
    public_key: bytes, context: bytes, value: Mapping[str, Any], signature: Mapping[str, Any]
) -> bool:
    """Is `signature`, a signature object as `SigningKey.sign` makes it, `public_key`'s
    Ed25519 signature over `value` under `context`?"""
    encoded = signature.get("value")
    return (
        signature.get("alg") == "Ed25519"
        and isinstance(encoded, str)
        and verify_signature(public_key, context, value, encoded)
    )


def sign_batch(key: SigningKey, receipts: Sequence[bytes]) -> list[dict[str, Any]]:
    """Each receipt's signature object (receipts as `canonical` bytes, at least one):
    the one Ed25519 signature over the batch's head, shared, and the receipt's own
    place in the batch's tree."""
    top, paths = root_and_paths([_receipt_leaf(data) for data in receipts])
    size = len(receipts)
    signature = key.sign(BATCH_HEAD_CONTEXT, _batch_head(size, top))
    return [
        signature
        | {"batch": {"tree_size": size, "leaf_index": i, "audit_path": [b64(h) for h in path]}}
        for i, path in enumerate(paths)
    ]


def verify_receipt_signature(
    public_key: bytes, receipt: Mapping[str, Any], signature: Mapping[str, Any]
) -> bool:
    """Is `signature` (a receipt's signature object) `public_key`'s over `receipt`?

    A batched receipt's audit path, from its leaf at its index in a tree of its size,
    leads to one root: the signed head holds that root and that size, so a flipped byte
    of the receipt, the path, the index or the size changes what the signature must
    cover, and it fails."""
    batch = signature.get("batch")
    if batch is None:
        return verify_signed(public_key, RECEIPT_V1_CONTEXT, receipt, signature)
    head = _claimed_head(receipt, batch)
    return head is not None and verify_signed(public_key, BATCH_HEAD_CONTEXT, head, signature)


def _claimed_head(receipt: Mapping[str, Any], batch: object) -> dict[str, Any] | None:
    """The batch head `batch` places `receipt` under, or None if it places it nowhere."""
    if not isinstance(batch, Mapping):
        return None
    size, index, path = batch.get("tree_size"), batch.get("leaf_index"), batch.get("audit_path")
    if not (isinstance(size, int) and isinstance(index, int) and isinstance(path, list)):
        return None
    try:
        hashes = [unb64(h) for h in path]
    except (TypeError, ValueError):
        return None
    top = inclusion_root(_receipt_leaf(canonical(receipt)), index, size, hashes)
    return _batch_head(size, top) if top is not None else None


def _receipt_leaf(data: bytes) -> bytes:
    """Under its own context, so no receipt's leaf is a log entry's with the same bytes."""
    return leaf_hash(RECEIPT_CONTEXT + data)


def _batch_head(tree_size: int, root_hash: bytes) -> dict[str, Any]:
    return {"tree_size": tree_size, "root_hash": b64(root_hash)}
