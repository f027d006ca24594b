"""API keys and who they name: how keys are made, recognised and hashed, and the
principal a key resolves to.

A key is the configured prefix plus 43 base62 characters (256 random bits).
Only HMAC-SHA256(key_hash_secret, key) is stored: a stolen database yields no
usable key, and without the server's secret not even a guessable one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
SECRET_CHARS = 43  # 62**43 > 2**256
KEY_ID_CHARS = 16


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a valid key names: what billing charges and the limiter counts."""

    key_id: str
    account_id: int
    rpm: int | None


def generate_key(prefix: str) -> str:
    return prefix + "".join(secrets.choice(BASE62) for _ in range(SECRET_CHARS))


def generate_key_id() -> str:
    return "key_" + "".join(secrets.choice(BASE62) for _ in range(KEY_ID_CHARS))


_SECRET_BODY = re.compile(f"[0-9A-Za-z]{{{SECRET_CHARS}}}", re.ASCII)


def is_well_formed(token: str, prefix: str) -> bool:
    return token.startswith(prefix) and _SECRET_BODY.fullmatch(token, len(prefix)) is not None


def key_hasher(secret: bytes) -> Callable[[str], str]:
    """HMAC-SHA256 keyed once. Every request hashes its key: copying the keyed state
    costs a fraction of keying anew (OpenSSL 3 also looks the digest up per call)."""
    keyed = hmac.new(secret, digestmod=hashlib.sha256)

    def hash_key(token: str) -> str:
        digest = keyed.copy()
        digest.update(token.encode())
        return digest.hexdigest()

    return hash_key


def hash_key(token: str, secret: bytes) -> str:
    return key_hasher(secret)(token)


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def key_hint(token: str, prefix: str) -> str:
    """What lists show of a key: enough to recognise it, never enough to use it."""
    return f"{prefix}...{token[-4:]}"
