"""The dashboard in a real browser (Debian's Chromium, driven by Playwright): sign in,
create a key and see it once, call the API with it through the official SDK, see the
completion in usage and the balance drop, look up its receipt, revoke it and see the
API refuse it, top up through the Stripe flow and see the credit once.

With TEEGATE_DASHBOARD_SCREENSHOTS=DIR the walk also saves each page at laptop and
phone widths into DIR (scripts/dashboard-screenshots refreshes docs/dashboard/).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import LAPTOP, PHONE, chromium
from tests.support.dashboard import PASSWORD, dashboard_gateway, invite
from tests.support.gateway import Devstack, Gateway, attested_settings
from tests.support.stripe import FakeCheckout, stripe_checkout

MODEL = "deepseek-ai/DeepSeek-V3-0324-TEE"
EMAIL = "dev@acme.test"


@pytest.fixture
def rig(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path: Path,
) -> Iterator[tuple[Gateway, FakeCheckout]]:
    with stripe_checkout() as checkout:
        settings = attested_settings(
            tmp_path / "gateway", devstack, attestation_services, enclave_files
        ).model_copy(update={"stripe": checkout.settings()})
        with dashboard_gateway(settings, "acme") as gateway:
            checkout.webhook_url = f"{gateway.url}/billing/webhook"
            yield gateway, checkout


class Shots:
    """Each page at laptop and phone widths, when asked for (off in CI)."""

    def __init__(self) -> None:
        where = os.environ.get("TEEGATE_DASHBOARD_SCREENSHOTS")
        self.directory = Path(where) if where else None

    def take(self, page: Page, name: str) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for label, size in (("laptop", LAPTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            page.screenshot(path=self.directory / f"{name}-{label}.png", full_page=True)
        page.set_viewport_size(LAPTOP)


def usd(page: Page, selector: str) -> Decimal:
    text = (page.text_content(selector) or "").strip()
    assert text.startswith("$"), text
    return Decimal(text[1:])


def test_a_user_walks_the_dashboard(rig: tuple[Gateway, FakeCheckout], tmp_path: Path) -> None:
    gateway, checkout = rig
    url = gateway.url
    shots = Shots()
    token = invite(gateway.settings, "acme", EMAIL)
    with chromium(tmp_path / "profile") as browser:
        page = browser.new_page()

        # the invite link sets a password (its token stays in the fragment), then sign in
        page.goto(f"{url}/dashboard/invite#{token}")
        assert page.url == f"{url}/dashboard/invite"  # the script took the token out
        page.fill("input[name=password]", PASSWORD)
        page.fill("input[name=password_again]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/dashboard")
        page.click("text=Sign out")
        page.wait_for_url(f"{url}/dashboard/sign-in")
        shots.take(page, "sign-in")
        page.fill("input[name=email]", EMAIL)
        page.fill("input[name=password]", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_url(f"{url}/dashboard")
        balance_before = usd(page, "#balance")

        # create a key: its secret is on this page, once
        page.goto(f"{url}/dashboard/keys")
        page.fill("input[name=name]", "browser")
        page.click("button:has-text('Create key')")
        secret = (page.text_content("#new-secret") or "").strip()
        assert secret.startswith(gateway.settings.key_prefix)
        page.click("button.copy")
        # the label changes once the (asynchronous) clipboard write has settled
        expect(page.locator("button.copy")).not_to_have_text("Copy")
        shots.take(page, "keys-new-secret")
        page.goto(f"{url}/dashboard/keys")
        assert secret not in page.content()
        assert page.is_visible("tr:has-text('browser') >> text=active")

        # call the API with it, through the official SDK
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=16
        )
        assert raw.parse().choices[0].message.content
        receipt_id = raw.headers["x-tee-receipt"]

        # the completion shows in usage, and the balance dropped by its cost
        page.goto(f"{url}/dashboard/usage?days=7")
        row = page.locator("#usage-by-model tr", has_text=MODEL)
        assert row.locator("td").nth(1).text_content() == "1"
        assert page.locator("svg.chart rect").count() == 1
        shots.take(page, "usage")
        page.goto(f"{url}/dashboard")
        cost = Decimal(
            row_cost := (page.locator("#ledger tr.debit td.num").first.text_content() or "x")[2:]
        )
        assert row_cost and cost > 0
        assert usd(page, "#balance") == balance_before - cost
        shots.take(page, "balance")

        # its signed receipt: the same cost, and how to verify it
        page.goto(f"{url}/dashboard/receipts")
        page.fill("input[name=receipt_id]", receipt_id)
        page.click("button:has-text('Look up')")
        page.wait_for_selector("#receipt")
        assert usd(page, "#receipt-cost") == cost
        assert page.text_content("#receipt-tcb") == "UpToDate"
        assert f"teegate verify {receipt_id}" in (page.text_content("#verify-command") or "")
        shots.take(page, "receipt")

        # revoke it: the dashboard says so and the API refuses it
        page.goto(f"{url}/dashboard/keys")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("tr:has-text('browser') button:has-text('Revoke')")
        page.wait_for_url(f"{url}/dashboard/keys")
        assert page.is_visible("tr:has-text('browser') >> text=revoked")
        with pytest.raises(openai.AuthenticationError):
            deadline = time.monotonic() + 5  # the auth cache trusts an answer for 1 s
            while time.monotonic() < deadline:
                client.models.list()
                time.sleep(0.1)

        # top up through Stripe Checkout: the credit shows once
        page.goto(f"{url}/billing")
        shots.take(page, "billing")
        before_top_up = usd(page, "#balance")
        page.fill("input[name=amount_usd]", "25")
        page.click("button:has-text('Continue to payment')")
        page.wait_for_url(f"{checkout.url}/pay/**")
        assert page.text_content("#amount") == "$25.00"
        page.click("#pay")
        page.wait_for_url(f"{url}/billing?paid=1")
        assert usd(page, "#balance") == before_top_up + 25
        payload, status = checkout.delivered[-1]
        assert status == 200
        assert checkout.redeliver(payload).json() == {"received": True, "credited": False}
        page.goto(f"{url}/dashboard")
        assert usd(page, "#balance") == before_top_up + 25
        assert page.locator("#ledger tr.credit", has_text="Stripe top-up").count() == 1

        page.goto(f"{url}/dashboard/models")
        assert page.is_visible(f"[data-model='{MODEL}'] >> text=verified")
        assert page.is_visible(f"[data-model='{MODEL}'] >> text=UpToDate")
        shots.take(page, "models")
