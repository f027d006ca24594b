"""The evidence HTTP client against real local servers: TLS peer cert, limits, failures."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teegate.attestation.http import EvidenceHttpClient
from teegate.devstack.tdx_pki import self_signed_tls_certificate
from teegate.errors import AttestationFailed


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {"nonce": request.query.get("nonce"), "auth": request.headers.get("Authorization")}
    )


async def _post(request: web.Request) -> web.Response:
    return web.json_response({"got": await request.json()})


async def _status(request: web.Request) -> web.Response:
    return web.json_response({"error": "x"}, status=int(request.match_info["code"]))


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"[" + b"1," * 100_000 + b"1]", content_type="application/json")


async def _not_json(request: web.Request) -> web.Response:
    return web.Response(text="<html>", content_type="text/html")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(0.3)
    return web.json_response({})


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/echo")


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/echo", _echo)
    app.router.add_post("/post", _post)
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/big", _big)
    app.router.add_get("/not-json", _not_json)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/redirect", _redirect)
    return app


async def _serve(
    app: web.Application, ssl_context: ssl.SSLContext | None
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, ssl.SSLContext]:
    cert_pem, key_pem = self_signed_tls_certificate()
    directory: Path = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return cert_pem, context


@pytest.fixture(scope="module")
async def http_url() -> AsyncIterator[str]:
    runner, url = await _serve(_app(), None)
    yield url
    await runner.cleanup()


@pytest.fixture(scope="module")
async def https_url(tls_cert: tuple[bytes, ssl.SSLContext]) -> AsyncIterator[str]:
    runner, url = await _serve(_app(), tls_cert[1])
    yield url
    await runner.cleanup()


async def _unavailable(client: EvidenceHttpClient, url: str) -> str:
    with pytest.raises(AttestationFailed) as info:
        await client.get_json(url)
    assert info.value.check == "evidence_unavailable"
    return info.value.reason


async def test_get_over_tls_returns_the_peer_certificate(
    https_url: str, tls_cert: tuple[bytes, ssl.SSLContext]
) -> None:
    client = EvidenceHttpClient(record_peer_certificate=True)
    try:
        result = await client.get_json(f"{https_url}/echo", params={"nonce": "ab"})
    finally:
        await client.aclose()
    assert result.body["nonce"] == "ab"
    expected = x509.load_pem_x509_certificate(tls_cert[0]).public_bytes(serialization.Encoding.DER)
    assert result.peer_certificate_der == expected
    assert hashlib.sha256(expected).hexdigest() not in repr(result)


async def test_every_request_records_its_own_connection(https_url: str) -> None:
    client = EvidenceHttpClient(record_peer_certificate=True)
    try:
        results = [await client.get_json(f"{https_url}/echo") for _ in range(3)]
    finally:
        await client.aclose()
    assert all(r.peer_certificate_der for r in results)


def test_recording_and_a_custom_context_exclude_each_other() -> None:
    with pytest.raises(ValueError):
        EvidenceHttpClient(record_peer_certificate=True, ssl_context=ssl.create_default_context())


async def test_self_signed_tls_is_refused_with_ca_verification(https_url: str) -> None:
    client = EvidenceHttpClient()
    try:
        await _unavailable(client, f"{https_url}/echo")
    finally:
        await client.aclose()


async def test_plain_http_has_no_peer_certificate(http_url: str) -> None:
    client = EvidenceHttpClient()
    try:
        result = await client.get_json(f"{http_url}/echo")
        posted = await client.post_json(f"{http_url}/post", {"a": 1})
    finally:
        await client.aclose()
    assert result.peer_certificate_der is None
    assert posted.body == {"got": {"a": 1}}


async def test_headers_are_sent_and_never_shown(http_url: str) -> None:
    client = EvidenceHttpClient(headers={"Authorization": "Bearer sk-secret"})
    try:
        result = await client.get_json(f"{http_url}/echo")
    finally:
        await client.aclose()
    assert result.body["auth"] == "Bearer sk-secret"
    assert "sk-secret" not in repr(client)


@pytest.mark.parametrize("path", ["/status/503", "/status/404", "/not-json", "/redirect"])
async def test_bad_responses_are_unavailable(http_url: str, path: str) -> None:
    client = EvidenceHttpClient()
    try:
        await _unavailable(client, f"{http_url}{path}?nonce=secret-ish")
    finally:
        await client.aclose()


async def test_reasons_do_not_carry_the_query(http_url: str) -> None:
    client = EvidenceHttpClient()
    try:
        reason = await _unavailable(client, f"{http_url}/status/500?token=abc")
    finally:
        await client.aclose()
    assert "abc" not in reason


async def test_body_over_the_limit_is_refused(http_url: str) -> None:
    client = EvidenceHttpClient(max_body_bytes=10_000)
    try:
        assert "body over" in await _unavailable(client, f"{http_url}/big")
    finally:
        await client.aclose()


async def test_timeout_is_unavailable(http_url: str) -> None:
    client = EvidenceHttpClient(timeout_s=0.05)
    try:
        await _unavailable(client, f"{http_url}/slow")
    finally:
        await client.aclose()


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = EvidenceHttpClient(unavailable_check="gpu_service_unavailable")
    try:
        with pytest.raises(AttestationFailed) as info:
            await client.get_json(f"http://127.0.0.1:{port}/")
        assert info.value.check == "gpu_service_unavailable"
    finally:
        await client.aclose()
