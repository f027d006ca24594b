"""The dashboard's store-backed edge: sign-in (argon2 hashes), invites, browser
sessions, and one account's keys, ledger and usage. It meets `dashboard.Console`;
`app.py` hands it to the pages, which never reach the store themselves.

Session and invite tokens are 256 random bits, stored as their SHA-256 only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import secrets
from typing import Any

import argon2
import argon2.exceptions

from teegate import auth
from teegate.apikeys import KeyPolicy, load_policy
from teegate.billing import Balance, Billing, UsageQuery, UsageRecord
from teegate.catalog import AttestationView, Catalog, describe
from teegate.config import Settings
from teegate.dashboard import DayUsage, KeyRow, LedgerRow, NewKey
from teegate.errors import StoreNotFound
from teegate.ratelimit import RateLimiter
from teegate.store import AccountStore, ApiKey, DashboardStore, Ledger, now_ms

CLIENT_SIGN_INS_PER_EMAIL = 10
"""One address may sign in this many times the per-email limit: several people can
share an address (an office's NAT), while guessing across many emails from one
address is still bounded."""

EXPORT_ROWS = 100_000
"""The most request rows one CSV export holds (newest first)."""

PASSWORD_REFUSED: tuple[type[Exception], ...] = (
    argon2.exceptions.VerificationError,
    argon2.exceptions.InvalidHashError,
)
"""argon2's answers that mean "not this password" (a mismatch, or a stored hash it
cannot read): sign-in refused, never an error page."""


def csrf_key(key_hash_secret: bytes) -> bytes:
    """The dashboard's CSRF key, derived from the gateway's secret so that no CSRF
    token is ever an HMAC a key hash could also be."""
    return hmac.new(key_hash_secret, b"teegate dashboard csrf", hashlib.sha256).digest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class AccountConsole:
    def __init__(
        self,
        settings: Settings,
        *,
        accounts: AccountStore,
        store: DashboardStore,
        ledger: Ledger,
        billing: Billing,
        catalog: Catalog,
        attestation: AttestationView,
        limiter: RateLimiter,
        key_secret: bytes,
    ) -> None:
        self._settings = settings
        self._accounts = accounts
        self._store = store
        self._ledger = ledger
        self._billing = billing
        self._catalog = catalog
        self._attestation = attestation
        self._limiter = limiter
        self._key_secret = key_secret
        self._hasher = argon2.PasswordHasher()
        self._decoy = self._hasher.hash(new_token())
        """Checked against when the email is unknown, so a wrong email costs what a
        wrong password does: the answer's timing does not say which emails exist."""

    def __repr__(self) -> str:
        return "AccountConsole()"

    async def sign_in(self, email: str, password: str) -> int | None:
        login = await self._store.find_login(normal_email(email))
        stored = login.password_hash if login is not None else None
        matches = await asyncio.to_thread(self._verify, stored or self._decoy, password)
        if login is None or stored is None or not matches:
            return None
        return login.account_id

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except PASSWORD_REFUSED:
            return False

    async def set_password(self, account_id: int, password: str) -> None:
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        await self._store.set_password_hash(account_id, hashed)

    async def accept_invite(self, token: str, password: str) -> int | None:
        account_id = await self._store.use_invite(token_hash(token))
        if account_id is not None:
            await self.set_password(account_id, password)
        return account_id

    async def allow_sign_in(self, email: str, client: str) -> int | None:
        per_email = self._settings.sign_in_per_minute
        buckets = (
            (f"sign-in:email:{normal_email(email)}", per_email),
            (f"sign-in:client:{client}", per_email * CLIENT_SIGN_INS_PER_EMAIL),
        )
        for bucket, limit in buckets:
            decision = await self._limiter.hit(bucket, limit)
            if not decision.allowed:
                return decision.retry_after_s
        return None

    async def open_session(self, account_id: int) -> str:
        token = new_token()
        expires = now_ms() + int(self._settings.dashboard_session_ttl_s * 1000)
        await self._store.add_session(token_hash(token), account_id, expires)
        return token

    async def session_account(self, token: str) -> int | None:
        return await self._store.session_account(token_hash(token))

    async def close_session(self, token: str) -> None:
        await self._store.drop_session(token_hash(token))

    async def account_name(self, account_id: int) -> str:
        return (await self._store.account(account_id)).name

    async def balance(self, account_id: int) -> Balance:
        return await self._billing.balance(account_id)

    async def ledger(self, account_id: int, limit: int) -> list[LedgerRow]:
        entries = await self._store.ledger(account_id, limit)
        return [
            LedgerRow(e.kind, e.amount_nano, e.reference, e.memo, e.created_ms) for e in entries
        ]

    async def keys(self, account_id: int) -> list[KeyRow]:
        name = await self.account_name(account_id)
        return [_key_row(k) for k in reversed(await self._accounts.list_keys(name))]

    async def create_key(self, account_id: int, name: str, rpm: int | None) -> NewKey:
        token, key = await auth.issue_key(
            self._accounts,
            account=await self.account_name(account_id),
            prefix=self._settings.key_prefix,
            secret=self._key_secret,
            name=name,
            rpm=rpm,
        )
        return NewKey(token, _key_row(key))

    async def _own_key(self, account_id: int, key_id: str) -> ApiKey | None:
        try:
            key = await self._accounts.get_key(key_id)
        except StoreNotFound:
            return None
        return key if key.account_id == account_id else None

    async def revoke_key(self, account_id: int, key_id: str) -> bool:
        if await self._own_key(account_id, key_id) is None:
            return False
        await self._accounts.revoke_key(key_id)
        return True

    async def rotate_key(self, account_id: int, key_id: str) -> NewKey | None:
        key = await self._own_key(account_id, key_id)
        if key is None or not key.active:
            return None
        token, new = await auth.rotate_key(
            self._accounts, key_id, prefix=self._settings.key_prefix, secret=self._key_secret
        )
        return NewKey(token, _key_row(new))

    async def set_limits(
        self, account_id: int, key_id: str, *, rpm: int | None, tpm: int | None
    ) -> bool:
        key = await self._own_key(account_id, key_id)
        if key is None or not key.active:
            return False
        policy = dataclasses.replace(load_policy(key.policy) or KeyPolicy(), tpm=tpm)
        await self._accounts.update_key(key_id, rpm=rpm, policy=policy.dumps())
        return True

    async def usage_by_day(self, account_id: int, since_ms: int) -> list[DayUsage]:
        await self._billing.meter.settled()
        return [
            DayUsage(
                d.day_ms, d.model, d.requests, d.prompt_tokens, d.completion_tokens, d.cost_nano
            )
            for d in await self._store.usage_by_day(account_id, since_ms)
        ]

    async def usage_records(self, account_id: int, since_ms: int) -> list[UsageRecord]:
        await self._billing.meter.settled()
        query = UsageQuery(limit=EXPORT_ROWS, account_id=account_id, since_ms=since_ms)
        return await self._ledger.usage(query)

    def models(self) -> list[dict[str, Any]]:
        described = []
        for model_id in self._catalog.servable_ids():
            for offer in self._catalog.servable(model_id):
                status = self._attestation.status(offer)
                entry = describe(offer, status)
                entry["attestation"] |= {
                    "upstream": offer.upstream,
                    "tcb_status": status.tcb_status,
                    "gpu": status.gpu,
                    "measurements": dict(status.measurements),
                    "reason": status.reason,
                }
                described.append(entry)
        return described


def normal_email(email: str) -> str:
    return email.strip().lower()


def _key_row(key: ApiKey) -> KeyRow:
    policy = load_policy(key.policy)
    return KeyRow(
        key.id,
        key.name,
        key.hint,
        key.rpm,
        key.created_ms,
        key.revoked_ms,
        policy.to_json() if policy is not None else None,
    )


async def invite(store: DashboardStore, account_id: int, ttl_s: float) -> str:
    """A one-time invite token for the account (returned once; its hash is kept)."""
    token = new_token()
    await store.add_invite(account_id, token_hash(token), now_ms() + int(ttl_s * 1000))
    return token
