"""Evidence adapters against real local servers: formats, binding inputs, bad evidence."""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from teegate.attestation import (
    EvidenceAdapter,
    EvidenceBatch,
    ProviderAssertedAdapter,
    attested_tls_report_data,
    chutes_report_data,
    spki_sha256,
)
from teegate.attestation.http import AttestedTlsAdapter, ChutesAdapter
from teegate.devstack.tdx_pki import TdxTestPki, chutes_evidence_entry, self_signed_tls_certificate
from teegate.errors import AttestationFailed

NONCE = bytes(range(32))


class Upstream:
    """Serves whatever body a test sets, and records what it was asked."""

    def __init__(self) -> None:
        self.body: Any = {}
        self.instances: Any = {"instances": []}
        self.requests: list[tuple[str, dict[str, str], str | None]] = []

    def app(self) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            self.requests.append(
                (request.path, dict(request.query), request.headers.get("Authorization"))
            )
            return web.json_response(self.instances if "/e2e/" in request.path else self.body)

        app = web.Application()
        app.router.add_get("/v1/attestation/report", answer)
        app.router.add_get("/chutes/{chute}/evidence", answer)
        app.router.add_get("/e2e/instances/{chute}", answer)
        return app


@pytest.fixture(scope="module")
def pki() -> TdxTestPki:
    return TdxTestPki()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, ssl.SSLContext]:
    cert_pem, key_pem = self_signed_tls_certificate()
    directory: Path = tmp_path_factory.mktemp("adapter-tls")
    (directory / "c.pem").write_bytes(cert_pem)
    (directory / "k.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "c.pem", directory / "k.pem")
    return cert_pem, context


@pytest.fixture
async def served(tls: tuple[bytes, ssl.SSLContext]) -> AsyncIterator[tuple[Upstream, str, str]]:
    upstream = Upstream()
    runners, urls = [], []
    for context in (tls[1], None):
        runner = web.AppRunner(upstream.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        runners.append(runner)
        urls.append(f"{'https' if context else 'http'}://127.0.0.1:{runner.addresses[0][1]}")
    yield upstream, urls[0], urls[1]
    for runner in runners:
        await runner.cleanup()


async def _fetch(adapter: EvidenceAdapter) -> EvidenceBatch:
    try:
        return await adapter.fetch(NONCE)
    finally:
        await adapter.aclose()


# ---- attested-tls ----


@pytest.mark.parametrize("encoding", ["hex", "base64"])
async def test_attested_tls_evidence_binds_the_connection_key(
    served: tuple[Upstream, str, str], tls: tuple[bytes, ssl.SSLContext], encoding: str
) -> None:
    upstream, https_url, _ = served
    quote = b"QUOTE-BYTES"
    upstream.body = {
        "quote": quote.hex() if encoding == "hex" else base64.b64encode(quote).decode()
    }
    batch = await _fetch(AttestedTlsAdapter(https_url + "/"))
    (evidence,) = batch.instances
    assert evidence.quote == quote
    assert evidence.tls_spki_sha256 == spki_sha256(tls[0])
    assert evidence.expected_report_data == attested_tls_report_data(spki_sha256(tls[0]), NONCE)
    assert evidence.gpu is None
    assert upstream.requests == [("/v1/attestation/report", {"nonce": NONCE.hex()}, None)]


async def test_attested_tls_gpu_evidence_forms(served: tuple[Upstream, str, str]) -> None:
    upstream, https_url, _ = served
    upstream.body = {
        "quote": "00",
        "gpu_evidence": {
            "arch": "BLACKWELL",
            "evidence_list": [{"evidence": "e", "certificate": "c"}],
        },
        "nvidia_token": [["JWT", "t"], {}],
    }
    (evidence,) = (await _fetch(AttestedTlsAdapter(https_url))).instances
    assert evidence.gpu is not None
    assert evidence.gpu.arch == "BLACKWELL"
    assert evidence.gpu.evidence_list == ({"evidence": "e", "certificate": "c"},)
    assert evidence.gpu.tokens == [["JWT", "t"], {}]
    upstream.body = {"quote": "00", "gpu_evidence": [{"evidence": "e"}]}
    (evidence,) = (await _fetch(AttestedTlsAdapter(https_url))).instances
    assert evidence.gpu is not None
    assert evidence.gpu.arch == "HOPPER" and len(evidence.gpu.evidence_list) == 1


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"quote": ""},
        {"quote": "not hex or base64!"},
        {"quote": "00", "gpu_evidence": "x"},
        {"quote": "00", "gpu_evidence": [1, 2]},
    ],
)
async def test_malformed_attested_tls_evidence_is_refused(
    served: tuple[Upstream, str, str], body: Any
) -> None:
    upstream, https_url, _ = served
    upstream.body = body
    with pytest.raises(AttestationFailed) as info:
        await _fetch(AttestedTlsAdapter(https_url))
    assert info.value.check == "evidence_format"


def test_attested_tls_needs_https() -> None:
    with pytest.raises(ValueError):
        AttestedTlsAdapter("http://upstream.example")


# ---- chutes ----


async def test_chutes_entries_bind_certificate_and_e2e_key(
    served: tuple[Upstream, str, str], pki: TdxTestPki
) -> None:
    upstream, _, http_url = served
    cert_pem = self_signed_tls_certificate()[0]
    entry = chutes_evidence_entry(
        pki, NONCE, instance_id="i-1", e2e_pubkey_b64="a2V5", certificate_pem=cert_pem
    )
    upstream.body = {
        "evidence": [entry, {"instance_id": "i-2", "quote": "00"}],
        "failed_instance_ids": ["i-3"],
    }
    upstream.instances = {"instances": [{"instance_id": "i-1", "e2e_pubkey": "a2V5"}]}
    batch = await _fetch(ChutesAdapter("c-1", api_base=http_url, api_key="cpk-secret"))
    (evidence,) = batch.instances
    assert evidence.instance_id == "i-1" and evidence.e2e_pubkey == "a2V5"
    assert evidence.expected_report_data == chutes_report_data(NONCE, "a2V5", cert_pem)
    assert evidence.tls_cert_sha256 is not None and evidence.gpu is not None
    assert len(evidence.gpu.evidence_list) == 1
    rejected = {instance: failure.check for instance, failure in batch.rejected}
    assert rejected == {"i-2": "evidence_format", "i-3": "evidence_unavailable"}
    assert [r[0] for r in upstream.requests] == ["/chutes/c-1/evidence", "/e2e/instances/c-1"]
    assert all(r[2] == "Bearer cpk-secret" for r in upstream.requests)
    assert upstream.requests[0][1] == {"nonce": NONCE.hex()}


async def test_chutes_entry_with_its_own_key_needs_no_lookup(
    served: tuple[Upstream, str, str], pki: TdxTestPki
) -> None:
    upstream, _, http_url = served
    cert_pem = self_signed_tls_certificate()[0]
    entry = chutes_evidence_entry(
        pki, NONCE, instance_id="i-1", e2e_pubkey_b64="a2V5", certificate_pem=cert_pem
    )
    upstream.body = {"evidence": [entry | {"e2e_pubkey": "a2V5"}], "failed_instance_ids": []}
    batch = await _fetch(ChutesAdapter("c-1", api_base=http_url))
    assert len(batch.instances) == 1
    assert [r[0] for r in upstream.requests] == ["/chutes/c-1/evidence"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.update(certificate="!!"),
        lambda e: e.update(certificate=base64.b64encode(b"not a cert").decode()),
        lambda e: e.update(instance_id="unknown-key"),
    ],
)
async def test_bad_chutes_entries_are_rejected_per_instance(
    served: tuple[Upstream, str, str], pki: TdxTestPki, mutate: Any
) -> None:
    upstream, _, http_url = served
    entry = chutes_evidence_entry(
        pki,
        NONCE,
        instance_id="i-1",
        e2e_pubkey_b64="a2V5",
        certificate_pem=self_signed_tls_certificate()[0],
    )
    mutate(entry)
    upstream.body = {"evidence": [entry]}
    upstream.instances = {"instances": [{"instance_id": "i-1", "e2e_pubkey": "a2V5"}]}
    batch = await _fetch(ChutesAdapter("c-1", api_base=http_url))
    assert batch.instances == ()
    assert batch.rejected[0][1].check in {"evidence_format", "certificate"}


async def test_chutes_document_that_is_not_an_object_is_refused(
    served: tuple[Upstream, str, str],
) -> None:
    upstream, _, http_url = served
    upstream.body = {"evidence": "nope"}
    with pytest.raises(AttestationFailed) as info:
        await _fetch(ChutesAdapter("c-1", api_base=http_url))
    assert info.value.check == "evidence_format"


def test_chutes_adapter_repr_hides_the_api_key() -> None:
    adapter = ChutesAdapter("c-1", api_key="cpk-secret")
    assert "cpk-secret" not in repr(adapter)


# ---- provider-asserted ----


async def test_provider_asserted_returns_only_the_flag() -> None:
    adapter = ProviderAssertedAdapter(lambda: True)
    batch = await _fetch(adapter)
    assert adapter.mode == "provider-asserted"
    assert batch.provider_asserted is True and batch.instances == ()


def test_certificate_digest_is_of_der() -> None:
    cert_pem = self_signed_tls_certificate()[0]
    assert len(hashlib.sha256(cert_pem).digest()) == 32
