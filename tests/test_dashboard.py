"""The dashboard over HTTP: sign-in, sessions, CSRF, keys, and one account's data only.

The browser test (tests/test_dashboard_browser.py) walks the same pages in Chromium;
these pin the rules a browser would not show: refused forms, cookie flags, limits.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from teegate.billing import nano_to_usd
from teegate.store import AccountStore
from tests.support.dashboard import PASSWORD, Browserless, csrf_of, invite
from tests.support.gateway import (
    Gateway,
    SettingsFor,
    running_gateway,
    with_store,
)

MODEL = "deepseek-ai/DeepSeek-V3-0324-TEE"


@pytest.fixture(scope="module")
def site(attested: SettingsFor) -> Iterator[Gateway]:
    with running_gateway(attested("dashboard", sign_in_per_minute=4), "acme") as gateway:
        yield gateway


@pytest.fixture
def acme(site: Gateway) -> Iterator[Browserless]:
    """A signed-in client of the `acme` account (its login made by invite)."""
    client = Browserless.at(site.url)
    token = invite(site.settings, "acme", "owner@acme.test")
    assert client.accept_invite(token).headers["location"] == "/dashboard"
    yield client
    client.close()


def test_pages_need_a_session(site: Gateway) -> None:
    client = Browserless.at(site.url)
    for path in [
        "/dashboard",
        "/dashboard/keys",
        "/dashboard/usage",
        "/dashboard/receipts",
        "/billing",
    ]:
        answer = client.http.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/sign-in"


def test_the_session_cookie_is_httponly_and_samesite(site: Gateway) -> None:
    client = Browserless.at(site.url)
    answer = client.accept_invite(invite(site.settings, "acme", "cookies@acme.test"))
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    session = next(c for c in cookies if c.startswith("teegate_session="))
    assert "HttpOnly" in session
    assert "SameSite=lax" in session
    assert "Secure" not in session  # development only: outside it the cookie is Secure


def test_a_form_without_the_csrf_token_is_refused(acme: Browserless) -> None:
    before = acme.http.get("/dashboard/keys").text.count("data-key-id")
    for token in ["", "0" * 64]:
        answer = acme.http.post("/dashboard/keys", data={"csrf_token": token, "name": "x"})
        assert answer.status_code == 403
    assert acme.http.get("/dashboard/keys").text.count("data-key-id") == before


def test_sign_in_refuses_a_wrong_password_and_is_rate_limited(site: Gateway) -> None:
    client = Browserless.at(site.url)
    assert client.accept_invite(invite(site.settings, "acme", "limit@acme.test")).is_redirect
    other = Browserless.at(site.url)
    statuses = [other.sign_in("limit@acme.test", "wrong password!").status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    refused = other.sign_in("limit@acme.test")  # the right password, still limited
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1


def test_an_invite_works_once(site: Gateway) -> None:
    token = invite(site.settings, "acme", "once@acme.test")
    assert Browserless.at(site.url).accept_invite(token).headers["location"] == "/dashboard"
    again = Browserless.at(site.url).accept_invite(token, "another password 123")
    assert again.status_code == 400
    assert Browserless.at(site.url).sign_in("once@acme.test").is_redirect
    refused = Browserless.at(site.url).sign_in("once@acme.test", "another password 123")
    assert refused.status_code == 401


def test_a_key_is_shown_once_and_only_its_account_reaches_it(
    site: Gateway, acme: Browserless
) -> None:
    created = acme.form("/dashboard/keys", "/dashboard/keys", name="ci", rpm="60")
    assert created.status_code == 200  # the secret is in this answer's body, not a redirect
    secret = created.text.split('<code id="new-secret">')[1].split("<")[0]
    assert secret.startswith(site.settings.key_prefix)
    assert secret not in acme.http.get("/dashboard/keys").text
    completion = site.client(api_key=secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    assert completion.usage is not None
    key_id = created.text.split('data-key-id="')[1].split('"')[0]  # newest first

    async def create_other(store: AccountStore) -> None:
        await store.create_account("other")

    with_store(site.settings, create_other)
    other = Browserless.at(site.url)
    assert other.accept_invite(invite(site.settings, "other", "owner@other.test")).is_redirect
    assert key_id not in other.http.get("/dashboard/keys").text
    for action in ["revoke", "rotate"]:
        page = other.http.get("/dashboard/keys").text
        answer = other.http.post(
            f"/dashboard/keys/{key_id}/{action}", data={"csrf_token": csrf_of(page)}
        )
        assert answer.status_code == 400
    site.client(api_key=secret).models.list()  # still alive

    page = acme.http.get("/dashboard/keys").text
    revoked = acme.http.post(f"/dashboard/keys/{key_id}/revoke", data={"csrf_token": csrf_of(page)})
    assert revoked.status_code == 303
    with pytest.raises(openai.AuthenticationError):
        _until_refused(site, secret)


def _until_refused(site: Gateway, secret: str) -> None:
    """The auth cache trusts an answer for at most a second."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        site.client(api_key=secret).models.list()
        time.sleep(0.1)


def test_rotating_a_key_shows_the_new_secret_and_refuses_the_old(
    site: Gateway, acme: Browserless
) -> None:
    created = acme.form("/dashboard/keys", "/dashboard/keys", name="rotating")
    old = created.text.split('<code id="new-secret">')[1].split("<")[0]
    key_id = created.text.split('data-key-id="')[1].split('"')[0]
    page = acme.http.get("/dashboard/keys").text
    rotated = acme.http.post(f"/dashboard/keys/{key_id}/rotate", data={"csrf_token": csrf_of(page)})
    assert rotated.status_code == 200
    new = rotated.text.split('<code id="new-secret">')[1].split("<")[0]
    assert new != old
    assert site.client(api_key=new).models.list().data
    with pytest.raises(openai.AuthenticationError):
        _until_refused(site, old)


def test_usage_csv_lists_each_request(site: Gateway, acme: Browserless) -> None:
    site.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    answer = acme.http.get("/dashboard/usage.csv?days=7")
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert rows
    assert {r["model"] for r in rows} == {MODEL}
    assert all(r["cost_usd"] and r["request_id"].startswith("req_") for r in rows)
    usage = acme.http.get("/dashboard/usage?days=7").text
    assert MODEL in usage
    assert "<svg" in usage


def test_pages_send_no_secret_and_forbid_framing_and_caching(acme: Browserless) -> None:
    for path in ["/dashboard", "/dashboard/keys", "/dashboard/usage", "/dashboard/models",
                 "/dashboard/receipts"]:  # fmt: skip
        page = acme.http.get(path)
        assert page.status_code == 200, path
        assert PASSWORD not in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_a_key_s_limits_are_set_from_the_dashboard(site: Gateway, acme: Browserless) -> None:
    created = acme.form("/dashboard/keys", "/dashboard/keys", name="limited")
    secret = created.text.split('<code id="new-secret">')[1].split("<")[0]
    key_id = created.text.split('data-key-id="')[1].split('"')[0]
    page = acme.http.get("/dashboard/keys").text
    refused = acme.http.post(
        f"/dashboard/keys/{key_id}/limits",
        data={"csrf_token": csrf_of(page), "rpm": "0", "tpm": ""},
    )
    assert refused.status_code == 400
    saved = acme.http.post(
        f"/dashboard/keys/{key_id}/limits",
        data={"csrf_token": csrf_of(page), "rpm": "7", "tpm": "5000"},
    )
    assert saved.status_code == 303
    deadline = time.monotonic() + 5  # the auth cache re-reads a key within a second
    while True:
        limits = httpx.get(
            f"{site.url}/v1/key", headers={"authorization": f"Bearer {secret}"}
        ).json()["data"]["rate_limit"]
        if limits["requests_per_minute"] == 7 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert limits["requests_per_minute"] == 7
    assert limits["tokens_per_minute"] == 5000


def test_a_receipt_is_shown_to_its_account_and_to_no_other(
    site: Gateway, acme: Browserless
) -> None:
    raw = site.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "receipt please"}], max_tokens=8
    )
    receipt_id = raw.headers["x-tee-receipt"]
    response_sha256 = hashlib.sha256(raw.http_response.content).hexdigest()
    page = _receipt_page(acme, receipt_id)
    assert page.status_code == 200, page.text
    signed = httpx.get(
        f"{site.url}/v1/receipts/{receipt_id}", headers={"authorization": f"Bearer {site.key}"}
    ).json()
    receipt = signed["receipt"]
    assert response_sha256 == receipt["response_sha256"]  # the bytes the client received
    shown = page.text
    assert f'data-receipt-id="{receipt_id}"' in shown
    assert f'<dd class="mono" id="receipt-model">{MODEL}</dd>' in shown
    cost = "$" + nano_to_usd(receipt["cost_nano_usd"])
    assert f'<span class="value" id="receipt-cost">{cost}</span>' in shown
    assert response_sha256 in shown and receipt["request_sha256"] in shown
    assert receipt["verdict"]["tcb_status"] in shown
    assert f"teegate verify {receipt_id} --gateway" in shown
    assert json.loads(html.unescape(shown.split('id="signed-receipt">')[1].split("</pre>")[0])) == (
        signed
    )

    async def create_stranger(store: AccountStore) -> None:
        await store.create_account("stranger")

    with_store(site.settings, create_stranger)
    stranger = Browserless.at(site.url)
    assert stranger.accept_invite(invite(site.settings, "stranger", "me@stranger.test")).is_redirect
    theirs = _lookup(stranger, receipt_id)
    unknown_id = "rcpt_" + "0" * 32
    unknown = _lookup(stranger, unknown_id)
    assert theirs.status_code == unknown.status_code == 404
    assert 'id="receipt"' not in theirs.text and MODEL not in theirs.text
    assert theirs.text.replace(receipt_id, unknown_id) == unknown.text.replace(
        csrf_of(theirs.text), csrf_of(unknown.text)
    )
    assert _lookup(acme, "not a receipt").status_code == 400
    forged = acme.http.post("/dashboard/receipts", data={"receipt_id": receipt_id})
    assert forged.status_code == 403


def _lookup(client: Browserless, receipt_id: str) -> httpx.Response:
    return client.form("/dashboard/receipts", "/dashboard/receipts", receipt_id=receipt_id)


def _receipt_page(client: Browserless, receipt_id: str) -> httpx.Response:
    """A receipt is stored a few milliseconds after its answer ends."""
    deadline = time.monotonic() + 5
    while (page := _lookup(client, receipt_id)).status_code == 404:
        assert time.monotonic() < deadline, page.text
        time.sleep(0.02)
    return page
