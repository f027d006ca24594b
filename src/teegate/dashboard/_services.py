"""What the pages need, as Protocols the dashboard owns: the store-backed edges
(`teegate.console`, `teegate.payments`) meet them and `app.py` hands them in, so no
page reaches the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from teegate.billing import Balance, UsageRecord


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    name: str
    hint: str
    rpm: int | None
    created_ms: int
    revoked_ms: int | None
    policy: dict[str, Any] | None
    """apikeys.KeyPolicy.to_json(), None for none."""

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: `secret` is shown on the page that answers its creation, once."""

    secret: str
    key: KeyRow


@dataclass(frozen=True, slots=True)
class LedgerRow:
    kind: str
    amount_nano: int
    reference: str | None
    memo: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class DayUsage:
    day_ms: int
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int


class Console(Protocol):
    """One signed-in account's view, and the sign-in that leads to it. Every method
    taking `account_id` touches that account's rows only."""

    async def sign_in(self, email: str, password: str) -> int | None:
        """The account whose login this is, or None (unknown email, wrong password)."""
        ...

    async def accept_invite(self, token: str, password: str) -> int | None:
        """Set the password of the invite's account; None if the invite is unknown,
        used or expired."""
        ...

    async def open_session(self, account_id: int) -> str: ...

    async def session_account(self, token: str) -> int | None: ...

    async def close_session(self, token: str) -> None: ...

    async def account_name(self, account_id: int) -> str: ...

    async def balance(self, account_id: int) -> Balance: ...

    async def ledger(self, account_id: int, limit: int) -> list[LedgerRow]: ...

    async def keys(self, account_id: int) -> list[KeyRow]: ...

    async def create_key(self, account_id: int, name: str, rpm: int | None) -> NewKey: ...

    async def revoke_key(self, account_id: int, key_id: str) -> bool:
        """False if the account has no such key."""
        ...

    async def rotate_key(self, account_id: int, key_id: str) -> NewKey | None: ...

    async def set_limits(
        self, account_id: int, key_id: str, *, rpm: int | None, tpm: int | None
    ) -> bool:
        """Set an active key's requests and tokens per minute (None: the default, none);
        the rest of its policy stays. False if the account has no such active key."""
        ...

    async def usage_by_day(self, account_id: int, since_ms: int) -> list[DayUsage]: ...

    async def usage_records(self, account_id: int, since_ms: int) -> list[UsageRecord]:
        """Newest first, for the CSV export."""
        ...

    def models(self) -> list[dict[str, Any]]:
        """The catalog as the gate sees it now, with each offer's attestation detail."""
        ...

    async def allow_sign_in(self, email: str, client: str) -> int | None:
        """None if a sign-in attempt may go ahead now, else seconds to wait."""
        ...


class TopUp(Protocol):
    """Prepaid credit bought through a payment provider."""

    @property
    def enabled(self) -> bool: ...

    @property
    def min_usd(self) -> str: ...

    @property
    def max_usd(self) -> str: ...

    async def checkout_url(
        self, account_id: int, amount_cents: int, success_url: str, cancel_url: str
    ) -> str:
        """Where the browser goes to pay."""
        ...

    async def receive(self, payload: bytes, signature: str | None) -> bool:
        """A webhook delivery: True if it posted credit now (a replay posts nothing).
        Raises errors.WebhookRejected for a payload the signature does not cover."""
        ...


class Receipts(Protocol):
    """Signed receipts, read back for the account they belong to (met by
    `teegate.receipts.ReceiptService`)."""

    async def receipt_for(self, receipt_id: str, account_id: int) -> dict[str, Any]:
        """The signed receipt as `GET /v1/receipts/{id}` answers it. Raises
        errors.NotFound for an unknown id and, alike, for another account's."""
        ...


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What `app.py` wires for the pages, kept on `app.state.dashboard`."""

    console: Console
    top_up: TopUp
    receipts: Receipts
    csrf_secret: bytes
    secure_cookies: bool
    session_ttl_s: float
    public_url: str
    """Where Stripe sends the browser back to (never the request's Host header)."""
    checkout_origins: tuple[str, ...] = ("https://checkout.stripe.com",)
    """Where a top-up form may send the browser on (the page's CSP form-action)."""
