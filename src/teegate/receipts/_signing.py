"""The receipt key and the one canonical encoding everything signed goes through.

Signed bytes are a context line (what the bytes are, so a receipt can never pass for
a tree head or the other way round) followed by the RFC 8785 (JSON Canonicalization
Scheme) encoding of the object: any client with a JCS library re-derives them from
the JSON it received.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RECEIPT_CONTEXT = b"teegate receipt v1\n"
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
        return self.sign_canonical(context, canonical(value))

    def sign_canonical(self, context: bytes, data: bytes) -> dict[str, str]:
        """Sign bytes `canonical` made (the caller keeps them to store or send)."""
        signature = self.private.sign(context + data)
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
