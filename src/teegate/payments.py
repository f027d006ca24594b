"""Top-ups through Stripe Checkout: the payment edge, meeting `dashboard.TopUp`.

Credit is posted only from a `checkout.session.completed` webhook whose signature
`stripe.Webhook.construct_event` verifies against the endpoint's secret, and only
for a paid session. Each event posts at most once (its id is a primary key
written in the credit's own transaction), and so does each Checkout Session (the
credit's ledger reference is derived from the session id): a replayed event, a
redelivery, or another event about the same session posts nothing. Which account
and how much come from the signed event itself (`client_reference_id`,
`amount_total`), never from the browser.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import stripe
import structlog

from teegate.billing import NANO_PER_USD, nano_to_usd, usd_to_nano
from teegate.config import StripeSettings
from teegate.errors import (
    ServiceUnavailable,
    StoreNotFound,
    TeegateError,
    WebhookRejected,
    map_error,
)
from teegate.store import DashboardStore

log = structlog.get_logger("teegate.payments")

NANO_PER_CENT = NANO_PER_USD // 100
COMPLETED = "checkout.session.completed"
CHECKOUT_ORIGIN = "https://checkout.stripe.com"

STRIPE_ERRORS: Mapping[type[BaseException], type[TeegateError]] = {
    stripe.SignatureVerificationError: WebhookRejected,
    stripe.StripeError: ServiceUnavailable,
}
"""What a Stripe call's failure becomes: a webhook its signature does not cover is
refused (400); any other error of the API (unreachable, refused, rate limited) means
payments are unavailable now (503)."""


def _mapped(exc: BaseException, message: str) -> TeegateError:
    error = map_error(type(exc), STRIPE_ERRORS) or ServiceUnavailable
    return error(message)


class StripeTopUp:
    def __init__(self, settings: StripeSettings, store: DashboardStore) -> None:
        self._settings = settings
        self._store = store
        self._client: stripe.StripeClient | None = None
        self._http = stripe.AIOHTTPClient()
        """aiohttp, which the gateway already runs on (stripe's default client is sync)."""
        if settings.secret_key is not None:
            addresses: Any = {"api": settings.api_base} if settings.api_base else None
            self._client = stripe.StripeClient(
                settings.secret_key.get_secret_value(),
                base_addresses=addresses,
                max_network_retries=1,
                http_client=self._http,
            )

    def __repr__(self) -> str:
        return f"StripeTopUp(enabled={self.enabled})"

    @property
    def checkout_origins(self) -> tuple[str, ...]:
        """Where Checkout pages are served: Stripe's, or the configured API's (a local
        stand-in serves both)."""
        if self._settings.api_base:
            parts = urlsplit(self._settings.api_base)
            return (CHECKOUT_ORIGIN, f"{parts.scheme}://{parts.netloc}")
        return (CHECKOUT_ORIGIN,)

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    @property
    def enabled(self) -> bool:
        return self._client is not None and self._settings.configured

    @property
    def min_usd(self) -> str:
        return nano_to_usd(usd_to_nano(str(self._settings.min_top_up_usd)))

    @property
    def max_usd(self) -> str:
        return nano_to_usd(usd_to_nano(str(self._settings.max_top_up_usd)))

    def cents_allowed(self, amount_cents: int) -> bool:
        cents = Decimal(amount_cents) / 100
        return self._settings.min_top_up_usd <= cents <= self._settings.max_top_up_usd

    async def checkout_url(
        self, account_id: int, amount_cents: int, success_url: str, cancel_url: str
    ) -> str:
        if self._client is None or not self.enabled:
            raise ServiceUnavailable("Top-ups are not configured on this gateway.")
        params: Any = {
            "mode": "payment",
            "client_reference_id": str(account_id),
            "metadata": {"account_id": str(account_id)},
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": amount_cents,
                        "product_data": {"name": "teegate prepaid credit"},
                    },
                }
            ],
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        try:
            session = await self._client.v1.checkout.sessions.create_async(params)
        except stripe.StripeError as exc:
            log.warning(
                "stripe_checkout_failed",
                error=type(exc).__name__,
                http_status=exc.http_status,
                detail=str(exc)[:200],
            )
            raise _mapped(
                exc, "The payment provider could not start a checkout; try again."
            ) from exc
        if not session.url:
            raise ServiceUnavailable("The payment provider gave no checkout page; try again.")
        return str(session.url)

    async def receive(self, payload: bytes, signature: str | None) -> bool:
        secret = self._settings.webhook_secret
        if secret is None:
            raise ServiceUnavailable("Top-ups are not configured on this gateway.")
        try:
            event = stripe.Webhook.construct_event(payload, signature, secret.get_secret_value())
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise WebhookRejected("The event's Stripe-Signature does not verify.") from exc
        if event.type != COMPLETED:
            return False
        session: dict[str, Any] = event.data.object.to_dict()
        if session.get("payment_status") != "paid" or session.get("currency") != "usd":
            return False
        account_id = _account_id(session.get("client_reference_id"))
        amount_cents = session.get("amount_total")
        if account_id is None or not isinstance(amount_cents, int) or amount_cents <= 0:
            return False
        try:
            await self._store.account(account_id)
        except StoreNotFound:
            return False
        return await self._store.credit_once(
            event.id,
            account_id,
            amount_cents * NANO_PER_CENT,
            reference=session_reference(str(session.get("id"))),
            memo="Stripe top-up",
        )


def session_reference(session_id: str) -> str:
    """The ledger reference of a Checkout Session's credit: unique per session, and
    short enough for the column whatever Stripe's id length."""
    return "stripe:" + hashlib.sha256(session_id.encode()).hexdigest()[:40]


def _account_id(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
