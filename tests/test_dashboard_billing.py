"""Top-up through Stripe: Checkout is started from /billing, and credit is posted
only by a signed `checkout.session.completed` webhook, once per event and per
Checkout Session, whatever is replayed, redelivered at once, or out of order.

Stripe is played by localstripe plus a minimal Checkout (tests/support/stripe.py);
signatures are checked by `stripe.Webhook.construct_event` in the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.support.dashboard import (
    Browserless,
    account_id,
    balance_usd,
    csrf_of,
    dashboard_gateway,
    invite,
)
from tests.support.gateway import Devstack, Gateway, attested_settings
from tests.support.stripe import (
    FakeCheckout,
    event_payload,
    paid_session,
    sign,
    stripe_checkout,
)


@pytest.fixture(scope="module")
def rig(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, FakeCheckout]]:
    with stripe_checkout() as checkout:
        settings = attested_settings(
            tmp_path_factory.mktemp("billing"), devstack, attestation_services, enclave_files
        ).model_copy(update={"stripe": checkout.settings()})
        with dashboard_gateway(settings, "acme") as gateway:
            checkout.webhook_url = f"{gateway.url}/billing/webhook"
            yield gateway, checkout


def post(gateway: Gateway, payload: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["stripe-signature"] = signature
    return httpx.post(f"{gateway.url}/billing/webhook", content=payload, headers=headers)


def test_a_completed_checkout_credits_once(rig: tuple[Gateway, FakeCheckout]) -> None:
    gateway, _ = rig
    before = balance_usd(gateway)
    session = paid_session(account_id(gateway.settings, "acme"), 2500)
    payload = event_payload(session)
    first = post(gateway, payload, sign(payload))
    assert first.status_code == 200
    assert first.json() == {"received": True, "credited": True}
    assert balance_usd(gateway) == before + Decimal(25)

    replayed = post(gateway, payload, sign(payload))
    assert replayed.json() == {"received": True, "credited": False}
    same_session = event_payload(session)  # another event id about the same session
    assert post(gateway, same_session, sign(same_session)).json()["credited"] is False
    assert balance_usd(gateway) == before + Decimal(25)


def test_the_same_event_delivered_at_once_credits_once(
    rig: tuple[Gateway, FakeCheckout],
) -> None:
    gateway, _ = rig
    before = balance_usd(gateway)
    payload = event_payload(paid_session(account_id(gateway.settings, "acme"), 1000))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(gateway, payload, sign(payload)), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert sum(a.json()["credited"] for a in answers) == 1
    assert balance_usd(gateway) == before + Decimal(10)


def test_out_of_order_events_change_nothing_more(rig: tuple[Gateway, FakeCheckout]) -> None:
    gateway, _ = rig
    account = account_id(gateway.settings, "acme")
    before = balance_usd(gateway)
    first = paid_session(account, 500)
    second = paid_session(account, 700)
    older, newer = event_payload(first), event_payload(second)
    expired = event_payload(first, type_="checkout.session.expired")
    for payload in [newer, expired, older, newer, older]:
        assert post(gateway, payload, sign(payload)).status_code == 200
    assert balance_usd(gateway) == before + Decimal(12)


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "t=1,v1=00",
        "other-secret",
        "stale",
    ],
)
def test_an_event_without_a_valid_signature_is_refused(
    rig: tuple[Gateway, FakeCheckout], signature: str | None
) -> None:
    gateway, _ = rig
    before = balance_usd(gateway)
    payload = event_payload(paid_session(account_id(gateway.settings, "acme"), 9900))
    if signature == "other-secret":
        signature = sign(payload, secret="whsec_someone_else")
    elif signature == "stale":
        signature = sign(payload, timestamp=int(time.time()) - 3600)
    answer = post(gateway, payload, signature)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "webhook_rejected"
    assert balance_usd(gateway) == before


def test_an_unpaid_or_foreign_session_credits_nothing(rig: tuple[Gateway, FakeCheckout]) -> None:
    gateway, _ = rig
    before = balance_usd(gateway)
    unpaid = paid_session(account_id(gateway.settings, "acme"), 4000) | {"payment_status": "unpaid"}
    euros = paid_session(account_id(gateway.settings, "acme"), 4000) | {"currency": "eur"}
    nobody = paid_session(999_999, 4000)
    for session in [unpaid, euros, nobody]:
        payload = event_payload(session)
        assert post(gateway, payload, sign(payload)).json()["credited"] is False
    assert balance_usd(gateway) == before


def test_billing_starts_a_checkout_for_the_signed_in_account(
    rig: tuple[Gateway, FakeCheckout],
) -> None:
    gateway, checkout = rig
    client = Browserless.at(gateway.url)
    assert client.accept_invite(invite(gateway.settings, "acme", "pay@acme.test")).is_redirect
    for amount in ["1", "100000", "12.345", "ten"]:
        refused = client.form("/billing", "/billing", amount_usd=amount)
        assert refused.status_code == 400, amount
    started = client.form("/billing", "/billing", amount_usd="42.50")
    assert started.status_code == 303, started.text
    session_id = started.headers["location"].rsplit("/", 1)[1]
    session = checkout.sessions[session_id]
    assert session["amount_total"] == 4250
    assert session["client_reference_id"] == str(account_id(gateway.settings, "acme"))
    assert session["success_url"] == f"{gateway.url}/billing?paid=1"
    page = client.http.get("/billing").text
    assert csrf_of(page)


def test_an_oversized_webhook_body_is_refused_unread(rig: tuple[Gateway, FakeCheckout]) -> None:
    gateway, _ = rig
    payload = b"{" + b" " * 300_000 + b"}"
    answer = post(gateway, payload, sign(payload))
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"
