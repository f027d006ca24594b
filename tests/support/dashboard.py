"""The dashboard driven over HTTP: logins made as `teegate accounts create --email`
makes them, and a cookie-keeping client that fills forms as a browser does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import httpx

from teegate import console
from teegate.app import create_app
from teegate.config import Settings
from teegate.store import AccountStore, DashboardStore
from tests.support.gateway import Gateway, prepare_database, with_store
from tests.support.servers import ServerThread, free_port

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
PASSWORD = "correct horse battery staple"


def invite(settings: Settings, account: str, email: str) -> str:
    """A one-time invite token for the account's new login (as the CLI issues)."""

    async def run(store: AccountStore) -> str:
        dashboard = DashboardStore(store.engine)
        login = await dashboard.set_email(account, email)
        return await console.invite(dashboard, login.account_id, settings.invite_ttl_s)

    return with_store(settings, run)


def account_id(settings: Settings, account: str) -> int:
    async def run(store: AccountStore) -> int:
        return (await store.get_account(account)).id

    return with_store(settings, run)


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, "the page has no CSRF token"
    return found[1]


@dataclass
class Browserless:
    """An httpx client keeping cookies; each POST carries the CSRF token of the page
    it was read from (as a browser submitting that page's form)."""

    http: httpx.Client

    @classmethod
    def at(cls, url: str) -> Browserless:
        return cls(httpx.Client(base_url=url, follow_redirects=False, timeout=10))

    def form(self, page: str, action: str, **fields: str) -> httpx.Response:
        token = csrf_of(self.http.get(page).text)
        return self.http.post(action, data={"csrf_token": token, **fields})

    def accept_invite(self, token: str, password: str = PASSWORD) -> httpx.Response:
        return self.form(
            "/dashboard/invite",
            "/dashboard/invite",
            invite=token,
            password=password,
            password_again=password,
        )

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.form("/dashboard/sign-in", "/dashboard/sign-in", email=email, password=password)

    def close(self) -> None:
        self.http.close()


@contextmanager
def dashboard_gateway(settings: Settings, account: str) -> Iterator[Gateway]:
    """`running_gateway`, with `public_url` set to where it serves (Stripe's return
    addresses are built from it, never from the request's Host header)."""
    port = free_port()
    settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    key = prepare_database(settings, account)
    server = ServerThread(create_app(settings), port=port).start()
    try:
        yield Gateway(server.url, settings, key, account)
    finally:
        server.stop()


def balance_usd(gateway: Gateway) -> Decimal:
    answer = httpx.get(
        f"{gateway.url}/v1/balance", headers={"authorization": f"Bearer {gateway.key}"}
    )
    answer.raise_for_status()
    return Decimal(answer.json()["balance"])
