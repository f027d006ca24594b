"""Shared fixtures: a real simulated upstream and a real gateway, both on loopback.

The helpers they are built from live in tests/support/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from teegate.config import Settings
from teegate.devstack import (
    DevstackConfig,
    SimulatedAttestationServices,
    SimulatedEnclave,
    build_app,
    build_services_app,
)
from teegate.store import create_engine, upgrade
from tests.support.billing import database_url
from tests.support.gateway import (
    EMBEDDING_MODEL,
    Devstack,
    Gateway,
    SettingsFor,
    attested_settings,
    running_gateway,
    serve_enclave,
    wait_for,
)
from tests.support.servers import serving


@pytest.fixture(scope="session")
def enclave() -> SimulatedEnclave:
    return SimulatedEnclave()


@pytest.fixture(scope="session")
def enclave_files(enclave: SimulatedEnclave, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The enclave's TLS cert and key, and the dev root CA, in one directory."""
    directory = tmp_path_factory.mktemp("enclave")
    enclave.write_tls_files(directory)
    (directory / "root-ca.der").write_bytes(enclave.root_ca_der)
    return directory


@pytest.fixture(scope="session")
def attestation_services(enclave: SimulatedEnclave) -> Iterator[Devstack]:
    with serving(build_services_app(SimulatedAttestationServices(enclave))) as server:
        yield Devstack(server.url)


@pytest.fixture(scope="session")
def devstack(enclave: SimulatedEnclave, enclave_files: Path) -> Iterator[Devstack]:
    app = build_app(DevstackConfig(first_token_delay_s=0.3), enclave=enclave)
    with serve_enclave(app, enclave, enclave_files) as server:
        yield Devstack(server.url)


@pytest.fixture(autouse=True)
def _clean_devstack(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults are reset before and after each test that can set them: a session-scoped
    gateway may be started by the next test before its own reset runs."""
    names = []
    if "devstack" in request.fixturenames or "gateway" in request.fixturenames:
        names.append("devstack")
    if "attestation_services" in request.fixturenames or "gateway" in request.fixturenames:
        names.append("attestation_services")
    servers = [request.getfixturevalue(name) for name in names]
    for server in servers:
        server.admin("POST", "reset")
    yield
    for server in servers:
        server.admin("POST", "reset")


@pytest.fixture(scope="session")
def attested(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> SettingsFor:
    def settings_for(name: str, **updates: Any) -> Settings:
        settings = attested_settings(
            tmp_path_factory.mktemp(name), devstack, attestation_services, enclave_files
        )
        return settings.model_copy(update=updates) if updates else settings

    return settings_for


@pytest.fixture(scope="session")
def gateway(attested: SettingsFor) -> Iterator[Gateway]:
    """The gateway most tests use: attested-tls to the simulated enclave, real verifier."""
    with running_gateway(attested("gateway"), "acme") as gateway:
        yield gateway


@pytest.fixture(scope="session")
def embeddings_rig(
    enclave: SimulatedEnclave,
    enclave_files: Path,
    attestation_services: Devstack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, Devstack]]:
    """A gateway attesting an enclave that also serves embeddings, and that enclave.

    The session's `devstack` serves none, so `gateway` keeps /v1/embeddings closed
    (the tests of the closed endpoint use it). Its enclave is another one under the
    same test PKI, so the session's attestation services vouch for it too.
    """
    second = SimulatedEnclave(pki=enclave.pki)
    app = build_app(DevstackConfig(embeddings=True, first_token_delay_s=0.3), enclave=second)
    with serve_enclave(app, second, tmp_path_factory.mktemp("embeddings-tls")) as upstream:
        devstack = Devstack(upstream.url)
        settings = attested_settings(
            tmp_path_factory.mktemp("embeddings"), devstack, attestation_services, enclave_files
        )
        with running_gateway(settings, "acme") as gateway:
            wait_for(gateway, lambda ids: EMBEDDING_MODEL in ids)
            yield gateway, devstack


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on each engine (PostgreSQL skips, saying why, when not configured)."""
    with database_url(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on `url`, migrated to the newest schema."""
    engine = create_engine(url)
    await upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()
