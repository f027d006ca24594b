"""Shared fixtures: a real simulated upstream and a real gateway, both on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from teegate import auth
from teegate.app import create_app
from teegate.config import Settings, UpstreamSettings, load_settings
from teegate.devstack import DevstackConfig, build_app
from teegate.store import AccountStore, create_engine, upgrade
from tests.servers import ServerThread, serving

KEY_SECRET = "test-key-hash-secret"


@dataclass
class Devstack:
    url: str

    def admin(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = httpx.request(method, f"{self.url}/admin/{path}", **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_faults(self, *faults: str) -> None:
        self.admin("PUT", "faults", json={"faults": list(faults)})

    def chat_requests(self) -> int:
        return int(self.admin("GET", "stats")["chat_requests"])


@dataclass
class Gateway:
    url: str
    settings: Settings
    key: str
    account: str

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("api_key", self.key)
        return openai.OpenAI(base_url=f"{self.url}/v1", **kwargs)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("api_key", self.key)
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", **kwargs)

    def issue_key(self, account: str | None = None, **kwargs: Any) -> str:
        async def run(store: AccountStore) -> str:
            token, _ = await auth.issue_key(
                store, account=account or self.account, prefix=self.settings.key_prefix,
                secret=KEY_SECRET.encode(), **kwargs,
            )
            return token

        return with_store(self.settings, run)


def with_store(settings: Settings, action: Any) -> Any:
    async def run() -> Any:
        engine = create_engine(settings.resolved_database_url)
        try:
            return await action(AccountStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def gateway_settings(data_dir: Path, upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "development",
        "data_dir": data_dir,
        "key_hash_secret": KEY_SECRET,
        "catalog_refresh_s": 0.3,
        "timeouts": {"connect_s": 2, "read_s": 2, "catalog_s": 2},
        "upstreams": (
            UpstreamSettings(name="devstack", base_url=upstream_url,
                             attestation="provider-asserted"),
        ),
    }
    values.update(overrides)
    return load_settings(None, **values)


def prepare_database(settings: Settings, account: str, credit_usd: str = "100") -> str:
    async def run(store: AccountStore) -> str:
        await upgrade(store.engine)
        await store.create_account(account)
        from teegate.billing import usd_to_nano

        await store.credit(account, usd_to_nano(credit_usd))
        token, _ = await auth.issue_key(
            store, account=account, prefix=settings.key_prefix, secret=KEY_SECRET.encode()
        )
        return token

    result: str = with_store(settings, run)
    return result


@pytest.fixture(scope="session")
def devstack() -> Iterator[Devstack]:
    with serving(build_app(DevstackConfig(first_token_delay_s=0.3))) as server:
        yield Devstack(server.url)


@pytest.fixture(autouse=True)
def _clean_devstack(request: pytest.FixtureRequest) -> None:
    if "devstack" in request.fixturenames or "gateway" in request.fixturenames:
        request.getfixturevalue("devstack").admin("POST", "reset")


@pytest.fixture(scope="session")
def gateway(devstack: Devstack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    settings = gateway_settings(tmp_path_factory.mktemp("gateway"), devstack.url)
    key = prepare_database(settings, "acme")
    server = ServerThread(create_app(settings)).start()
    try:
        yield Gateway(server.url, settings, key, "acme")
    finally:
        server.stop()


def postgres_url() -> str | None:
    return os.environ.get("TEEGATE_TEST_POSTGRES_URL")
