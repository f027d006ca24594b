"""Stripe, played on loopback: localstripe (a stateful fake Stripe server, run as a
real process) takes the card payment, and a minimal Checkout stands in for what
localstripe does not cover.

localstripe implements customers, payment methods, payment intents, subscriptions
and more, but no Checkout Sessions (`POST /v1/checkout/sessions` answers 404) and
no `checkout.session.*` events. `FakeCheckout` serves that one call behind the same
SDK request (`client.v1.checkout.sessions.create`), a hosted payment page that pays
with a test card through localstripe, and the `checkout.session.completed` webhook,
signed as Stripe signs (`t=...,v1=HMAC-SHA256(secret, "t.payload")`) with a test
secret; the gateway verifies it with `stripe.Webhook.construct_event`.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from teegate.config import StripeSettings
from tests.support.servers import ServerThread, free_port

STRIPE_SECRET_KEY = "sk_test_teegate_dashboard"
WEBHOOK_SECRET = "whsec_test_teegate_dashboard"
TEST_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, as Stripe computes it."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event_payload(
    session: dict[str, Any], *, type_: str = "checkout.session.completed", event_id: str = ""
) -> bytes:
    return orjson.dumps(
        {
            "id": event_id or "evt_" + secrets.token_hex(12),
            "object": "event",
            "api_version": stripe.api_version,
            "created": int(time.time()),
            "livemode": False,
            "type": type_,
            "data": {"object": session},
        }
    )


def paid_session(account_id: int, amount_cents: int, session_id: str = "") -> dict[str, Any]:
    """A completed Checkout Session as Stripe sends it in the webhook."""
    return {
        "id": session_id or "cs_test_" + secrets.token_hex(30),
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "currency": "usd",
        "amount_total": amount_cents,
        "client_reference_id": str(account_id),
        "metadata": {"account_id": str(account_id)},
    }


@contextmanager
def localstripe() -> Iterator[str]:
    """A localstripe server on a free loopback port; its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/v1/customers", auth=(STRIPE_SECRET_KEY, ""), timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "localstripe exited"
                assert time.monotonic() < deadline, "localstripe did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class FakeCheckout:
    """Checkout Sessions for the SDK, a hosted payment page, and the webhook."""

    localstripe_url: str
    webhook_url: str = ""
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    delivered: list[tuple[bytes, int]] = field(default_factory=list)
    """Each webhook payload sent and the gateway's answer status."""
    url: str = ""

    def settings(self) -> StripeSettings:
        return StripeSettings(
            secret_key=STRIPE_SECRET_KEY, webhook_secret=WEBHOOK_SECRET, api_base=self.url
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/checkout/sessions", self.create_session, methods=["POST"]),
                Route("/pay/{session_id}", self.pay_page, methods=["GET"]),
                Route("/pay/{session_id}", self.pay, methods=["POST"]),
            ]
        )

    async def create_session(self, request: Request) -> Response:
        form = await request.form()
        if request.headers.get("authorization") != f"Bearer {STRIPE_SECRET_KEY}":
            return JSONResponse({"error": {"message": "Invalid API Key"}}, status_code=401)
        session_id = "cs_test_" + secrets.token_hex(30)
        amount = int(str(form["line_items[0][price_data][unit_amount]"]))
        quantity = int(str(form["line_items[0][quantity]"]))
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": str(form["mode"]),
            "status": "open",
            "payment_status": "unpaid",
            "currency": str(form["line_items[0][price_data][currency]"]),
            "amount_total": amount * quantity,
            "client_reference_id": str(form["client_reference_id"]),
            "metadata": {"account_id": str(form["metadata[account_id]"])},
            "success_url": str(form["success_url"]),
            "cancel_url": str(form["cancel_url"]),
            "url": f"{self.url}/pay/{session_id}",
        }
        self.sessions[session_id] = session
        return JSONResponse(session)

    async def pay_page(self, request: Request) -> Response:
        session = self.sessions[request.path_params["session_id"]]
        amount = f"{session['amount_total'] / 100:.2f}"
        return HTMLResponse(
            "<!doctype html><meta name=viewport content='width=device-width'>"
            "<title>Test checkout</title><h1>Test checkout (localstripe)</h1>"
            f"<p>Pay <strong id=amount>${html.escape(amount)}</strong> USD with a test card.</p>"
            f"<form method=post><button id=pay type=submit>Pay</button></form>"
        )

    async def pay(self, request: Request) -> Response:
        """Charge the test card through localstripe, then tell the gateway, signed."""
        session = self.sessions[request.path_params["session_id"]]
        http = stripe.AIOHTTPClient()
        client = stripe.StripeClient(
            STRIPE_SECRET_KEY, base_addresses={"api": self.localstripe_url}, http_client=http
        )
        card: Any = {"type": "card", "card": TEST_CARD}
        try:
            method = await client.v1.payment_methods.create_async(params=card)
            intent = await client.v1.payment_intents.create_async(
                params={
                    "amount": session["amount_total"],
                    "currency": session["currency"],
                    "payment_method": method.id,
                    "confirm": True,
                }
            )
        finally:
            await http.close_async()  # type: ignore[no-untyped-call]
        assert intent.status == "succeeded", intent.status
        session |= {"status": "complete", "payment_status": "paid", "payment_intent": intent.id}
        await self.deliver(event_payload(session))
        return RedirectResponse(session["success_url"], status_code=303)

    async def deliver(self, payload: bytes) -> int:
        async with httpx.AsyncClient() as http:
            response = await http.post(self.webhook_url, content=payload, headers=_signed(payload))
        self.delivered.append((payload, response.status_code))
        return response.status_code

    def redeliver(self, payload: bytes) -> httpx.Response:
        """Send an event again, freshly signed, as Stripe retries one."""
        response = httpx.post(self.webhook_url, content=payload, headers=_signed(payload))
        self.delivered.append((payload, response.status_code))
        return response


def _signed(payload: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "stripe-signature": sign(payload)}


@contextmanager
def stripe_checkout() -> Iterator[FakeCheckout]:
    """localstripe and the Checkout stand-in, both on loopback."""
    with localstripe() as ls_url:
        checkout = FakeCheckout(ls_url)
        server = ServerThread(checkout.app()).start()
        checkout.url = server.url
        try:
            yield checkout
        finally:
            server.stop()
