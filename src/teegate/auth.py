"""Who is calling: API keys resolved to accounts, and keys issued and rotated.

Resolved keys are cached for a second: a key lookup then costs no query on the
hot path, and a revocation still takes effect everywhere within a second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from teegate import apikeys
from teegate.errors import InvalidApiKey
from teegate.store import AccountStore, ApiKey, KeyOwner

KEY_CACHE_TTL_S = 1.0
KEY_CACHE_MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    account_id: int
    rpm: int | None


class KeyLookup(Protocol):
    async def find_key_owner(self, key_hash: str) -> KeyOwner | None: ...


class Authenticator:
    def __init__(self, lookup: KeyLookup, *, prefix: str, secret: bytes) -> None:
        self._lookup = lookup
        self._prefix = prefix
        self._secret = secret
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    def __repr__(self) -> str:
        return f"Authenticator(prefix={self._prefix!r})"

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer_token(authorization)
        if not apikeys.is_well_formed(token, self._prefix):
            raise InvalidApiKey(
                f"Malformed API key: keys look like '{self._prefix}' followed by "
                f"{apikeys.SECRET_CHARS} letters and digits."
            )
        key_hash = apikeys.hash_key(token, self._secret)
        principal = await self._resolve(key_hash)
        if principal is None:
            raise InvalidApiKey("Incorrect API key provided, or the key was revoked.")
        return principal

    async def _resolve(self, key_hash: str) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            return cached[1]
        owner = await self._lookup.find_key_owner(key_hash)
        principal = None
        if owner is not None and not owner.revoked and apikeys.same_hash(owner.key_hash, key_hash):
            principal = Principal(owner.key_id, owner.account_id, owner.rpm)
        if len(self._cache) >= KEY_CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[key_hash] = (now + KEY_CACHE_TTL_S, principal)
        return principal


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise InvalidApiKey(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidApiKey("Send the API key as 'Authorization: Bearer <key>'.")
    return token.strip()


async def issue_key(
    store: AccountStore,
    *,
    account: str,
    prefix: str,
    secret: bytes,
    name: str = "",
    rpm: int | None = None,
) -> tuple[str, ApiKey]:
    """Create a key; the secret is returned here once and never stored."""
    token = apikeys.generate_key(prefix)
    key = await store.create_key(
        key_id=apikeys.generate_key_id(),
        account_name=account,
        key_hash=apikeys.hash_key(token, secret),
        hint=apikeys.key_hint(token, prefix),
        name=name,
        rpm=rpm,
    )
    return token, key


async def rotate_key(
    store: AccountStore, key_id: str, *, prefix: str, secret: bytes
) -> tuple[str, ApiKey]:
    """A new key with the old one's account, name and limit; the old one is revoked."""
    old = await store.get_key(key_id)
    token, new = await issue_key(
        store,
        account=old.account_name,
        prefix=prefix,
        secret=secret,
        name=old.name,
        rpm=old.rpm,
    )
    await store.revoke_key(key_id)
    return token, new
