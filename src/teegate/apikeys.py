"""API key secrets: how they are made, recognised and hashed.

A key is the configured prefix plus 43 base62 characters (256 random bits).
Only HMAC-SHA256(key_hash_secret, key) is stored: a stolen database yields no
usable key, and without the server's secret not even a guessable one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
SECRET_CHARS = 43  # 62**43 > 2**256
KEY_ID_CHARS = 16


def generate_key(prefix: str) -> str:
    return prefix + "".join(secrets.choice(BASE62) for _ in range(SECRET_CHARS))


def generate_key_id() -> str:
    return "key_" + "".join(secrets.choice(BASE62) for _ in range(KEY_ID_CHARS))


def is_well_formed(token: str, prefix: str) -> bool:
    body = token[len(prefix) :]
    return token.startswith(prefix) and len(body) == SECRET_CHARS and all(c in BASE62 for c in body)


def hash_key(token: str, secret: bytes) -> str:
    return hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def key_hint(token: str, prefix: str) -> str:
    """What lists show of a key: enough to recognise it, never enough to use it."""
    return f"{prefix}...{token[-4:]}"
