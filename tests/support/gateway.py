"""A real gateway and simulated upstream on loopback: settings, a funded database, clients.

The fixtures that start them live in conftest.py; these are the pieces tests build
their own gateways from.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import openai
from starlette.types import ASGIApp

from teegate import apikeys, auth
from teegate.app import create_app
from teegate.config import AttestationSettings, Settings, UpstreamSettings, load_settings
from teegate.devstack import SimulatedAttestationServices, SimulatedEnclave
from teegate.store import AccountStore, create_engine, upgrade
from tests.support.servers import ServerThread, serving

T = TypeVar("T")

KEY_SECRET = "test-key-hash-secret"
ADMIN_TOKEN = "tgadm_test-admin-token"
"""The operators' token of every test gateway (its SHA-256 is in `gateway_settings`)."""
EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-0.6B-TEE"
"""The devstack's confidential embedding model (served with `DevstackConfig(embeddings=True)`)."""


@dataclass
class Devstack:
    url: str

    def admin(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        # verify=False: admin calls must work while tls-key-swap presents a rogue key
        response = httpx.request(method, f"{self.url}/admin/{path}", verify=False, **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_faults(self, *faults: str) -> None:
        self.admin("PUT", "faults", json={"faults": list(faults)})

    def chat_requests(self) -> int:
        return int(self.admin("GET", "stats")["chat_requests"])

    def embeddings_requests(self) -> int:
        return int(self.admin("GET", "stats")["embeddings_requests"])


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
                store,
                account=account or self.account,
                prefix=self.settings.key_prefix,
                secret=KEY_SECRET.encode(),
                **kwargs,
            )
            return token

        return with_store(self.settings, run)


def model_ids(gateway: Gateway) -> set[str]:
    return {m.id for m in gateway.client().models.list()}


def wait_for(gateway: Gateway, condition: Callable[[set[str]], bool]) -> None:
    """Until a catalog sync has made the gateway's /v1/models satisfy `condition`."""
    deadline = time.monotonic() + 10
    while not condition(model_ids(gateway)):
        assert time.monotonic() < deadline, "the catalog sync never got there"
        time.sleep(0.05)


def with_store(settings: Settings, action: Callable[[AccountStore], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings.resolved_database_url)
        try:
            return await action(AccountStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def dev_attestation(services_url: str, root_ca_file: Path, **overrides: Any) -> AttestationSettings:
    """Verify against the simulated PCS/NRAS and the test PKI's root (labelled simulated)."""
    return AttestationSettings(
        pccs_url=services_url,
        nras_attest_url=f"{services_url}/v3/attest/gpu",
        nras_jwks_url=f"{services_url}/.well-known/jwks.json",
        nras_issuer=SimulatedAttestationServices.issuer,
        dev_root_ca_file=root_ca_file,
        **overrides,
    )


def attested_settings(
    data_dir: Path,
    devstack: Devstack,
    services: Devstack,
    enclave_files: Path,
    **attestation: Any,
) -> Settings:
    """Settings for a gateway that attests the session's simulated enclave."""
    return gateway_settings(
        data_dir,
        devstack.url,
        attestation=dev_attestation(services.url, enclave_files / "root-ca.der", **attestation),
    )


class SettingsFor(Protocol):
    """The `attested` fixture: settings for a fresh gateway (its own data directory,
    named `name`) attesting the session's simulated enclave, with `updates` applied."""

    def __call__(self, name: str, **updates: Any) -> Settings: ...


def gateway_settings(
    data_dir: Path,
    upstream_url: str,
    *,
    attestation: AttestationSettings | None = None,
    **overrides: Any,
) -> Settings:
    """An https upstream is attested (attested-tls, `attestation` required); an http one
    is provider-asserted."""
    mode = "attested-tls" if upstream_url.startswith("https://") else "provider-asserted"
    values: dict[str, Any] = {
        "environment": "development",
        "data_dir": data_dir,
        "key_hash_secret": KEY_SECRET,
        "admin_token_sha256": apikeys.token_sha256(ADMIN_TOKEN),
        "catalog_refresh_s": 0.3,
        "timeouts": {"connect_s": 2, "read_s": 2, "catalog_s": 2},
        "upstreams": (UpstreamSettings(name="devstack", base_url=upstream_url, attestation=mode),),
    }
    if attestation is not None:
        values["attestation"] = attestation
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

    return with_store(settings, run)


def serve_enclave(
    app: ASGIApp, enclave: SimulatedEnclave, files: Path
) -> AbstractContextManager[ServerThread]:
    certfile, keyfile = enclave.write_tls_files(files)
    return serving(
        app,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        ssl_context_factory=enclave.ssl_context_factory,
    )


@contextmanager
def running_gateway(settings: Settings, account: str) -> Iterator[Gateway]:
    """A fresh database with a funded account and key, and a gateway serving it."""
    key = prepare_database(settings, account)
    server = ServerThread(create_app(settings), http_limits=settings.http).start()
    try:
        yield Gateway(server.url, settings, key, account)
    finally:
        server.stop()
