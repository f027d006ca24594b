"""The fault suites' fixtures: a paced devstack upstream in this process, a gateway
(`teegate serve`, a child process) on SQLite, and a private PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from teegate.devstack import build_app
from tests.support.processes import PrivatePostgres, private_postgres
from tests.support.reliability import PACED, Rig, start_rig
from tests.support.servers import serving


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serving(build_app(PACED)) as server:
        yield server.url


@pytest.fixture(scope="module")
def rig(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    directory = tmp_path_factory.mktemp("rig")
    url = f"sqlite+aiosqlite:///{directory / 'teegate.db'}"
    built = start_rig(directory, upstream, url)
    try:
        yield built
    finally:
        built.devstack.admin("POST", "reset")
        built.gateway.stop()


@pytest.fixture(scope="package")
def postgres() -> Iterator[PrivatePostgres]:
    """A cluster of the suite's own: restarting it disturbs no one else."""
    with private_postgres() as server:
        yield server
