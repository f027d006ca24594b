"""Who is calling: API keys resolved to accounts, and keys issued and rotated.

An answer from the store is trusted for at most KEY_CACHE_TTL_S, so a revocation
takes effect everywhere within a second. Keys in use are re-read in the
background, all in one query, every KEY_REFRESH_S: their cached answers never
expire while the store answers, so no request waits on a key lookup but a key's
first (or one idle for KEY_IDLE_S).

Keys not cached are looked up in batches: every key asked for while a lookup runs
waits for the next one, a single query. A flood of random well-formed keys costs
one query at a time, not a pooled connection each (it once exhausted the pool and
answered 500s), and a valid, a revoked and an unknown key take the same path, so
their answers take the same time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from teegate import apikeys
from teegate.apikeys import KeyPolicy, Principal
from teegate.attestation import MeasurementAllowList
from teegate.config import Settings
from teegate.errors import InvalidApiKey, PolicyError
from teegate.store import AccountStore, ApiKey, KeyOwner

KEY_CACHE_TTL_S = 1.0
KEY_REFRESH_S = 0.5
KEY_IDLE_S = 60.0
KEY_CACHE_MAX_ENTRIES = 100_000

log = structlog.get_logger("teegate.auth")


class KeyLookup(Protocol):
    async def find_key_owners(self, key_hashes: Sequence[str]) -> dict[str, KeyOwner]: ...


@dataclass(slots=True)
class _Answer:
    principal: Principal | None
    asked_s: float
    """When the query that gave this answer started: its age counts from then."""
    used_s: float


class Authenticator:
    def __init__(self, lookup: KeyLookup, *, prefix: str, secret: bytes) -> None:
        self._lookup = lookup
        self._prefix = prefix
        self._hash_key = apikeys.key_hasher(secret)
        self._cache: dict[str, _Answer] = {}
        self._asking: dict[str, asyncio.Future[Principal | None]] = {}
        """Every key waiting for a lookup: queued, or in the one running."""
        self._queued: list[str] = []
        self._batches: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"Authenticator(prefix={self._prefix!r})"

    async def authenticate(self, authorization: str | None) -> Principal:
        token = _bearer_token(authorization)
        if not apikeys.is_well_formed(token, self._prefix):
            raise InvalidApiKey(
                f"Malformed API key: keys look like '{self._prefix}' followed by "
                f"{apikeys.SECRET_CHARS} letters and digits."
            )
        key_hash = self._hash_key(token)
        principal = await self._resolve(key_hash)
        if principal is None:
            raise InvalidApiKey("Incorrect API key provided, or the key was revoked.")
        return principal

    async def _resolve(self, key_hash: str) -> Principal | None:
        now = time.monotonic()
        answer = self._cache.get(key_hash)
        if answer is not None and now - answer.asked_s < KEY_CACHE_TTL_S:
            answer.used_s = now
            return answer.principal
        asking = self._asking.get(key_hash)
        if asking is None:  # one lookup per key, however many requests wait on it
            asking = self._asking[key_hash] = asyncio.get_running_loop().create_future()
            asking.add_done_callback(_retrieve)
            self._queued.append(key_hash)
            if self._batches is None or self._batches.done():
                self._batches = asyncio.ensure_future(self._ask_batches())
                self._batches.add_done_callback(self._batches_ended)
        return await asyncio.shield(asking)

    async def _ask_batches(self) -> None:
        """Look up the queued keys, one query at a time, until none are queued."""
        while self._queued:
            batch, self._queued = self._queued, []
            asked = time.monotonic()
            try:
                owners = await self._lookup.find_key_owners(batch)
            except Exception as exc:
                for key_hash in batch:
                    self._asking.pop(key_hash).set_exception(exc)
                continue
            except BaseException:  # cancelled: its waiters go with it (`_batches_ended`)
                self._queued += batch
                raise
            self._make_room(len(batch))
            for key_hash in batch:
                principal = self._principal(key_hash, owners)
                self._cache[key_hash] = _Answer(principal, asked, asked)
                self._asking.pop(key_hash).set_result(principal)

    def _batches_ended(self, batches: asyncio.Future[None]) -> None:
        """Lookups cancelled (perhaps before they began) leave no request waiting forever."""
        if batches.cancelled() and batches is self._batches:
            for key_hash in self._queued:
                self._asking.pop(key_hash).cancel()
            self._queued = []

    def _make_room(self, entries: int) -> None:
        """Unknown keys go first: a flood of them must not evict the keys in use."""
        if len(self._cache) + entries <= KEY_CACHE_MAX_ENTRIES:
            return
        self._cache = {h: a for h, a in self._cache.items() if a.principal is not None}
        if len(self._cache) + entries > KEY_CACHE_MAX_ENTRIES:
            self._cache.clear()

    async def refresh(self) -> None:
        """Re-read every key used within KEY_IDLE_S; forget the others."""
        asked = time.monotonic()
        for key_hash in [h for h, a in self._cache.items() if asked - a.used_s >= KEY_IDLE_S]:
            del self._cache[key_hash]
        known = [h for h, a in self._cache.items() if a.principal is not None]
        if not known:
            return
        owners = await self._lookup.find_key_owners(known)
        for key_hash in known:
            answer = self._cache.get(key_hash)
            if answer is not None and answer.asked_s < asked:
                answer.principal = self._principal(key_hash, owners)
                answer.asked_s = asked

    async def run(self) -> None:
        """Refresh until cancelled; a failed refresh leaves answers to expire (and
        the requests that then need them to ask the store themselves)."""
        while True:
            await asyncio.sleep(KEY_REFRESH_S)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("key_refresh_failed", error=type(exc).__name__)

    def _principal(self, key_hash: str, owners: dict[str, KeyOwner]) -> Principal | None:
        owner = owners.get(key_hash)
        if owner is None or owner.revoked or not apikeys.same_hash(owner.key_hash, key_hash):
            return None
        return Principal(
            owner.key_id,
            owner.account_id,
            owner.rpm,
            apikeys.load_policy(owner.policy),
            owner.budgeted,
        )


def _retrieve(answer: asyncio.Future[Principal | None]) -> None:
    """A failed lookup's error is raised in every request that still waits; marked
    seen here so one whose requests all left is not logged as never retrieved."""
    if not answer.cancelled():
        answer.exception()


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
    policy: KeyPolicy | None = None,
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
        policy=policy.dumps() if policy is not None else None,
    )
    return token, key


async def rotate_key(
    store: AccountStore, key_id: str, *, prefix: str, secret: bytes
) -> tuple[str, ApiKey]:
    """A new key with the old one's account, name, limit and policy; the old one is revoked."""
    old = await store.get_key(key_id)
    token, new = await issue_key(
        store,
        account=old.account_name,
        prefix=prefix,
        secret=secret,
        name=old.name,
        rpm=old.rpm,
        policy=apikeys.load_policy(old.policy),
    )
    await store.revoke_key(key_id)
    return token, new


def check_policy(policy: KeyPolicy, settings: Settings) -> None:
    """Refuse a policy that asks for less than the gateway does, or for upstreams,
    TCB statuses or measurements the gateway would never accept: a key can only
    narrow what the gateway serves."""
    floor = policy.attestation
    if floor is None:
        return
    config = settings.attestation
    measurements = (
        MeasurementAllowList.from_file(config.measurements_file).allowed
        if config.measurements_file
        else None
    )
    problems = floor.looser_than(
        tcb=config.allowed_tcb_statuses,
        upstreams=[u.name for u in settings.upstreams],
        measurements=measurements,
    )
    if problems:
        raise PolicyError("the key's attestation policy: " + "; ".join(problems))
