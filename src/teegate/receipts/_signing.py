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

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RECEIPT_CONTEXT = b"teegate receipt v1\n"
TREE_HEAD_CONTEXT = b"teegate tree head v1\n"


def canonical(value: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of a JSON object (integers must stay within ±2^53)."""
    return rfc8785.dumps(value)


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

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def id(self) -> str:
        return key_id(self.public)

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
