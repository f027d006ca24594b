"""The NRAS client against a local NRAS: attest, JWKS caching, rotation, outages."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from teegate.attestation import GpuEvidence
from teegate.attestation.http import NvidiaRemoteAttestationService
from teegate.devstack.tdx_pki import LocalGpuAttestationService, fake_gpu_evidence
from teegate.errors import AttestationFailed


class LocalNras:
    def __init__(self) -> None:
        self.service = LocalGpuAttestationService()
        self.jwks_fetches = 0
        self.posted: list[Any] = []

    def app(self) -> web.Application:
        async def attest(request: web.Request) -> web.Response:
            body = await request.json()
            self.posted.append(body)
            return web.json_response(self.service.attest(body["evidence_list"], body["nonce"]))

        async def jwks(request: web.Request) -> web.Response:
            self.jwks_fetches += 1
            return web.json_response(self.service.jwks())

        app = web.Application()
        app.router.add_post("/v3/attest/gpu", attest)
        app.router.add_get("/.well-known/jwks.json", jwks)
        return app


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def nras() -> AsyncIterator[tuple[LocalNras, str]]:
    local = LocalNras()
    runner = web.AppRunner(local.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield local, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


def _client(url: str, clock: Clock) -> NvidiaRemoteAttestationService:
    return NvidiaRemoteAttestationService(
        attest_url=f"{url}/v3/attest/gpu",
        jwks_url=f"{url}/.well-known/jwks.json",
        issuer="https://nras.attestation.nvidia.com",
        keys_ttl_s=100,
        min_refetch_interval_s=10,
        clock=clock,
    )


async def test_attest_posts_the_nras_v3_payload(nras: tuple[LocalNras, str]) -> None:
    local, url = nras
    client = _client(url, Clock())
    items = fake_gpu_evidence(2)
    try:
        tokens = await client.attest(GpuEvidence(evidence_list=tuple(items)), b"\x01" * 32)
    finally:
        await client.aclose()
    assert local.posted == [{"nonce": "01" * 32, "arch": "HOPPER", "evidence_list": items}]
    assert tokens[0][0] == "JWT" and set(tokens[1]) == {"GPU-0", "GPU-1"}


async def test_keys_are_cached_and_refetched_on_rotation(nras: tuple[LocalNras, str]) -> None:
    local, url = nras
    clock = Clock()
    client = _client(url, clock)
    try:
        assert list(await client.signing_keys()) == [local.service.kid]
        await client.signing_keys()
        await client.signing_keys(refresh=True)  # too soon after the last fetch
        assert local.jwks_fetches == 1
        local.service = LocalGpuAttestationService()
        clock.now = 11
        assert list(await client.signing_keys(refresh=True)) == [local.service.kid]
        clock.now = 200
        await client.signing_keys()  # TTL passed
        assert local.jwks_fetches == 3
    finally:
        await client.aclose()


async def test_unreachable_service_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}", Clock())
    try:
        with pytest.raises(AttestationFailed) as info:
            await client.signing_keys()
        assert info.value.check == "gpu_service_unavailable"
        assert client.issuer == "https://nras.attestation.nvidia.com"
    finally:
        await client.aclose()
