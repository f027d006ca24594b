"""End to end with the real verifier: a simulated attested-tls upstream over real TLS,
a local NRAS, and every attack the issue lists refused with the right check."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teegate.attestation import (
    AttestationMode,
    AttestationPolicy,
    Attestor,
    Collateral,
    EvidenceVerifier,
    MeasurementAllowList,
    ProviderAssertedAdapter,
    StaticCollateralProvider,
    UpstreamAttestation,
    VerdictCache,
)
from teegate.attestation.http import (
    AttestedTlsAdapter,
    ChutesAdapter,
    EvidenceHttpClient,
    NvidiaRemoteAttestationService,
)
from teegate.devstack.tdx_pki import (
    LocalGpuAttestationService,
    TdxTestPki,
    attested_tls_report,
    chutes_evidence_entry,
    collateral_window,
    self_signed_tls_certificate,
)
from teegate.errors import AttestationFailed, ConfigError

UPSTREAM = "sim"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class SimulatedUpstream:
    """A confidential upstream whose misbehaviour each test picks."""

    pki: TdxTestPki
    nras: LocalGpuAttestationService
    cert_pem: bytes
    behaviour: str = "ok"
    nonces: list[str] = field(default_factory=list)
    first_report: dict[str, Any] | None = None

    def report(self, nonce_hex: str) -> dict[str, Any]:
        self.nonces.append(nonce_hex)
        nonce = bytes.fromhex(nonce_hex)
        body = self._report(nonce)
        self.first_report = self.first_report or body
        return body

    def _report(self, nonce: bytes) -> dict[str, Any]:
        b = self.behaviour
        if b == "replay" and self.first_report is not None:
            return self.first_report
        if b == "wrong_key":
            return attested_tls_report(
                self.pki, nonce, self_signed_tls_certificate()[0], gpu=self.nras
            )
        if b in {"no_gpu", "debug", "mrtd"}:
            gpu = None if b == "no_gpu" else self.nras
            mr_td = b"\x66" * 48 if b == "mrtd" else b"\x03" * 48
            return attested_tls_report(
                self.pki, nonce, self.cert_pem, gpu=gpu, debug=b == "debug", mr_td=mr_td
            )
        body = attested_tls_report(
            self.pki, nonce, self.cert_pem, gpu=self.nras, include_gpu_token=b != "gpu_raw"
        )
        return self._gpu_attack(body, nonce) if b.startswith("gpu_") else body

    def _gpu_attack(self, body: dict[str, Any], nonce: bytes) -> dict[str, Any]:
        items = body["gpu_evidence"]["evidence_list"]
        if self.behaviour == "gpu_bad_signature":
            impostor = LocalGpuAttestationService(issuer=self.nras.issuer)
            impostor.kid = self.nras.kid
            body["nvidia_token"] = impostor.attest(items, nonce.hex())
        elif self.behaviour == "gpu_wrong_nonce":
            body["nvidia_token"] = self.nras.attest(items, "00" * 32)
        elif self.behaviour == "gpu_failed":
            body["nvidia_token"] = self.nras.attest(items, nonce.hex(), overall_result=False)
        return body


def _upstream_app(sim: SimulatedUpstream) -> web.Application:
    async def report(request: web.Request) -> web.Response:
        if sim.behaviour == "unavailable":
            return web.json_response({"error": "down"}, status=503)
        return web.json_response(sim.report(request.query["nonce"]))

    app = web.Application()
    app.router.add_get("/v1/attestation/report", report)
    return app


def _nras_app(nras: LocalGpuAttestationService) -> web.Application:
    async def attest(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(nras.attest(body["evidence_list"], body["nonce"]))

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(nras.jwks())

    app = web.Application()
    app.router.add_post("/v3/attest/gpu", attest)
    app.router.add_get("/.well-known/jwks.json", jwks)
    return app


async def _serve(
    app: web.Application, context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    scheme = "https" if context else "http"
    return runner, f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture(scope="module")
def pki() -> TdxTestPki:
    return TdxTestPki()


@pytest.fixture(scope="module")
def nras() -> LocalGpuAttestationService:
    return LocalGpuAttestationService()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, ssl.SSLContext]:
    cert_pem, key_pem = self_signed_tls_certificate()
    directory: Path = tmp_path_factory.mktemp("upstream-tls")
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return cert_pem, context


@pytest.fixture(scope="module")
def sim(
    pki: TdxTestPki, nras: LocalGpuAttestationService, tls: tuple[bytes, ssl.SSLContext]
) -> SimulatedUpstream:
    return SimulatedUpstream(pki, nras, tls[0])


@pytest.fixture(autouse=True)
def _reset(sim: SimulatedUpstream) -> Iterator[None]:
    yield
    sim.behaviour = "ok"
    sim.first_report = None
    sim.nonces.clear()


@pytest.fixture(scope="module")
async def upstream_url(
    sim: SimulatedUpstream, tls: tuple[bytes, ssl.SSLContext]
) -> AsyncIterator[str]:
    runner, url = await _serve(_upstream_app(sim), tls[1])
    yield url
    await runner.cleanup()


@pytest.fixture(scope="module")
async def nras_url(nras: LocalGpuAttestationService) -> AsyncIterator[str]:
    runner, url = await _serve(_nras_app(nras))
    yield url
    await runner.cleanup()


def _collateral(pki: TdxTestPki, now: float, after_s: int = 30 * 86400) -> StaticCollateralProvider:
    issued, next_update = collateral_window(now, after_s=after_s)
    text = pki.collateral_json(issued_at=issued, next_update=next_update)
    return StaticCollateralProvider(Collateral.from_json(text, source="test-pki"))


MakeAttestor = Callable[..., Attestor]


@pytest.fixture
async def make_attestor(
    pki: TdxTestPki, nras: LocalGpuAttestationService, upstream_url: str, nras_url: str
) -> AsyncIterator[MakeAttestor]:
    made: list[Attestor] = []
    verifiers: list[EvidenceVerifier] = []

    def make(
        policy: AttestationPolicy | None = None,
        *,
        clock: Clock | None = None,
        production: bool = False,
        collateral_after_s: int = 30 * 86400,
    ) -> Attestor:
        clock = clock or Clock()
        service = NvidiaRemoteAttestationService(
            EvidenceHttpClient(unavailable_check="gpu_service_unavailable"),
            attest_url=f"{nras_url}/v3/attest/gpu",
            jwks_url=f"{nras_url}/.well-known/jwks.json",
            issuer=nras.issuer,
        )
        verifier = EvidenceVerifier(
            _collateral(pki, clock.now, collateral_after_s),
            root_ca_der=None if production else pki.root_der,
            gpu_service=service,
            clock=clock,
        )
        config = UpstreamAttestation(
            UPSTREAM, AttestedTlsAdapter(upstream_url), policy or AttestationPolicy()
        )
        attestor = Attestor(verifier, [config], cache=VerdictCache(clock=clock), clock=clock)
        made.append(attestor)
        return attestor

    yield make
    for attestor in made:
        await attestor.aclose()
    for verifier in verifiers:
        await verifier.aclose()


async def _refused(attestor: Attestor, check: str) -> AttestationFailed:
    await attestor.refresh(UPSTREAM)
    with pytest.raises(AttestationFailed) as info:
        attestor.cache.require(UPSTREAM)
    assert info.value.check == check, info.value
    return info.value


# ---- what passes ----


async def test_attested_tls_upstream_passes_and_pins_its_tls_key(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    attestor = make_attestor()
    await attestor.refresh(UPSTREAM)
    verdict = attestor.cache.require(UPSTREAM)
    cert_der = x509.load_pem_x509_certificate(sim.cert_pem).public_bytes(serialization.Encoding.DER)
    assert verdict.passed and verdict.mode == "simulated"
    assert verdict.tls_cert_sha256 == hashlib.sha256(cert_der).digest()
    assert verdict.tls_spki_sha256 is not None
    assert verdict.tcb_status == "UpToDate"
    assert len(verdict.gpus) == 1
    assert verdict.evidence is not None and verdict.evidence.nonce.hex() == sim.nonces[-1]
    report = verdict.to_report()
    assert report["evidence"]["quote"] and report["evidence"]["gpu_tokens"]
    assert report["evidence"]["collateral"]["source"] == "test-pki"
    assert {c["name"] for c in report["checks"]} >= {"quote_signature", "report_data", "gpu_nonce"}


async def test_every_refresh_uses_a_fresh_nonce(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    attestor = make_attestor()
    await attestor.refresh(UPSTREAM)
    await attestor.refresh(UPSTREAM)
    assert len(sim.nonces) == 2 and sim.nonces[0] != sim.nonces[1]
    assert all(len(n) == 64 for n in sim.nonces)


async def test_raw_gpu_evidence_is_attested_through_the_gpu_service(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    sim.behaviour = "gpu_raw"
    attestor = make_attestor()
    await attestor.refresh(UPSTREAM)
    assert attestor.cache.require(UPSTREAM).gpus[0].name == "GPU-0"


async def test_gpu_can_be_optional_per_upstream(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    sim.behaviour = "no_gpu"
    attestor = make_attestor(AttestationPolicy(require_gpu=False))
    await attestor.refresh(UPSTREAM)
    assert attestor.cache.require(UPSTREAM).gpus == ()


async def test_verdict_expires_with_its_collateral(make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(collateral_after_s=120)
    await attestor.refresh(UPSTREAM)
    verdict = attestor.cache.require(UPSTREAM)
    assert verdict.expires_at_s <= verdict.verified_at_s + 121


# ---- attacks, each refused with the right check ----


async def test_replayed_quote_is_refused(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    attestor = make_attestor()
    sim.behaviour = "replay"
    await attestor.refresh(UPSTREAM)  # first answer: fresh, passes
    attestor.cache.require(UPSTREAM)
    await _refused(attestor, "report_data")  # same quote again, old nonce


async def test_quote_not_binding_the_tls_key_is_refused(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    sim.behaviour = "wrong_key"
    await _refused(make_attestor(), "report_data")


async def test_debug_td_is_refused(make_attestor: MakeAttestor, sim: SimulatedUpstream) -> None:
    sim.behaviour = "debug"
    await _refused(make_attestor(), "debug")


async def test_mrtd_not_allow_listed_is_refused(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    sim.behaviour = "mrtd"
    policy = AttestationPolicy(
        measurements=MeasurementAllowList.from_mapping({"mrtd": ["03" * 48]})
    )
    await _refused(make_attestor(policy), "measurements")


async def test_test_root_quote_is_refused_in_production_mode(make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(production=True)
    await _refused(attestor, "quote_signature")
    assert attestor.cache.verdicts(UPSTREAM)[0].mode == "hardware"


@pytest.mark.parametrize(
    ("behaviour", "check"),
    [
        ("gpu_bad_signature", "gpu_signature"),
        ("gpu_wrong_nonce", "gpu_nonce"),
        ("gpu_failed", "gpu_result"),
    ],
)
async def test_bad_gpu_tokens_are_refused(
    make_attestor: MakeAttestor, sim: SimulatedUpstream, behaviour: str, check: str
) -> None:
    sim.behaviour = behaviour
    await _refused(make_attestor(), check)


async def test_missing_gpu_evidence_is_refused_by_default(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    sim.behaviour = "no_gpu"
    await _refused(make_attestor(), "gpu_evidence")


async def test_unavailable_evidence_keeps_the_verdict_until_stale(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    clock = Clock()
    attestor = make_attestor(AttestationPolicy(verdict_ttl_s=300, refresh_margin_s=60), clock=clock)
    await attestor.refresh(UPSTREAM)
    first = attestor.cache.require(UPSTREAM)
    sim.behaviour = "unavailable"
    clock.now += 250
    await attestor.refresh(UPSTREAM)
    assert attestor.cache.require(UPSTREAM) is first  # still fresh: kept
    assert attestor.next_refresh_in_s(UPSTREAM) <= 15  # retrying
    clock.now += 50
    failure = await _refused(attestor, "stale")
    assert "HTTP 503" in failure.reason


async def test_unavailable_evidence_with_no_verdict_is_refused(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    sim.behaviour = "unavailable"
    await _refused(make_attestor(), "evidence_unavailable")


async def test_a_failed_verification_replaces_a_passing_verdict(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    attestor = make_attestor()
    await attestor.refresh(UPSTREAM)
    sim.behaviour = "debug"
    await _refused(attestor, "debug")


async def test_unexpected_verifier_errors_become_rejections(
    pki: TdxTestPki, upstream_url: str
) -> None:
    class BrokenCollateral:
        async def collateral_for(self, quote: bytes, now_s: int) -> Collateral:
            raise RuntimeError("bug in a provider")

        async def refresh(self) -> None:
            return None

    verifier = EvidenceVerifier(BrokenCollateral(), root_ca_der=pki.root_der)
    policy = AttestationPolicy(require_gpu=False)
    attestor = Attestor(
        verifier, [UpstreamAttestation(UPSTREAM, AttestedTlsAdapter(upstream_url), policy)]
    )
    try:
        failure = await _refused(attestor, "internal")
    finally:
        await attestor.aclose()
    assert "bug in a provider" in failure.reason


async def test_an_adapter_bug_refuses_at_once(
    pki: TdxTestPki, sim: SimulatedUpstream, upstream_url: str
) -> None:
    class BuggyAdapter:
        mode: AttestationMode = "attested-tls"

        async def fetch(self, nonce: bytes) -> Any:
            raise KeyError("odd evidence")

        async def aclose(self) -> None:
            return None

    sim.behaviour = "no_gpu"
    policy = AttestationPolicy(require_gpu=False)
    verifier = EvidenceVerifier(_collateral(pki, time.time()), root_ca_der=pki.root_der)
    cache = VerdictCache()
    good = Attestor(
        verifier,
        [UpstreamAttestation(UPSTREAM, AttestedTlsAdapter(upstream_url), policy)],
        cache=cache,
    )
    await good.refresh(UPSTREAM)
    await good.aclose()
    assert cache.require(UPSTREAM).passed
    buggy = Attestor(verifier, [UpstreamAttestation(UPSTREAM, BuggyAdapter(), policy)], cache=cache)
    failure = await _refused(buggy, "internal")
    assert "odd evidence" in failure.reason


# ---- scheduling and the API around it ----


async def test_refresh_is_scheduled_before_expiry(make_attestor: MakeAttestor) -> None:
    clock = Clock()
    attestor = make_attestor(
        AttestationPolicy(verdict_ttl_s=600, refresh_margin_s=120), clock=clock
    )
    assert attestor.next_refresh_in_s(UPSTREAM) == 15  # nothing yet: retry soon
    await attestor.refresh(UPSTREAM)
    assert attestor.next_refresh_in_s(UPSTREAM) == pytest.approx(480, abs=1)
    clock.now += 479
    assert attestor.next_refresh_in_s(UPSTREAM) == 1.0


async def test_background_loop_fills_the_cache_and_stops(make_attestor: MakeAttestor) -> None:
    attestor = make_attestor()
    attestor.start()
    for _ in range(200):
        if attestor.cache.verdicts(UPSTREAM):
            break
        await asyncio.sleep(0.01)
    assert attestor.cache.require(UPSTREAM).passed
    await attestor.aclose()
    assert "running=False" in repr(attestor)


async def test_a_client_nonce_is_attested_but_never_cached(
    make_attestor: MakeAttestor, sim: SimulatedUpstream
) -> None:
    attestor = make_attestor()
    verdicts = await attestor.attest(UPSTREAM, nonce=b"\x07" * 32)
    assert verdicts[0].passed and sim.nonces == ["07" * 32]
    assert attestor.cache.verdicts(UPSTREAM) == ()
    with pytest.raises(ValueError):
        await attestor.attest(UPSTREAM, nonce=b"short")


def test_gpu_requirement_without_a_gpu_service_is_a_config_error(pki: TdxTestPki) -> None:
    verifier = EvidenceVerifier(_collateral(pki, time.time()), root_ca_der=pki.root_der)
    adapter = AttestedTlsAdapter("https://127.0.0.1:1")
    with pytest.raises(ConfigError):
        Attestor(verifier, [UpstreamAttestation(UPSTREAM, adapter)])
    with pytest.raises(ConfigError):
        policy = AttestationPolicy(require_gpu=False)
        Attestor(verifier, [UpstreamAttestation("a", adapter, policy)] * 2)


# ---- provider-asserted and chutes ----


async def test_provider_asserted_is_labelled_and_follows_the_flag(pki: TdxTestPki) -> None:
    flag = {"value": True}
    verifier = EvidenceVerifier(_collateral(pki, time.time()), root_ca_der=pki.root_der)
    adapter = ProviderAssertedAdapter(lambda: flag["value"])
    attestor = Attestor(verifier, [UpstreamAttestation("pa", adapter)])
    await attestor.refresh("pa")
    verdict = attestor.cache.require("pa")
    assert verdict.mode == "provider-asserted" and verdict.evidence is None
    assert "mode=provider-asserted" in verdict.header_value()
    flag["value"] = False
    await attestor.refresh("pa")
    with pytest.raises(AttestationFailed) as info:
        attestor.cache.require("pa")
    assert info.value.check == "provider_asserted"


async def test_chutes_instances_are_attested_one_by_one(
    pki: TdxTestPki, nras: LocalGpuAttestationService, nras_url: str
) -> None:
    cert_pem = self_signed_tls_certificate()[0]
    pubkeys = {"i-1": "cHViMQ==", "i-2": "cHViMg==", "i-bad": "cHViMw=="}

    async def evidence(request: web.Request) -> web.Response:
        nonce = bytes.fromhex(request.query["nonce"])
        entries = [
            chutes_evidence_entry(
                pki, nonce, instance_id=i, e2e_pubkey_b64=k, certificate_pem=cert_pem
            )
            for i, k in pubkeys.items()
        ]
        entries[2]["quote"] = entries[0]["quote"]  # i-bad presents another instance's quote
        return web.json_response({"evidence": entries, "failed_instance_ids": ["i-down"]})

    async def instances(request: web.Request) -> web.Response:
        items = [{"instance_id": i, "e2e_pubkey": k} for i, k in pubkeys.items()]
        return web.json_response({"instances": items})

    app = web.Application()
    app.router.add_get("/chutes/c-1/evidence", evidence)
    app.router.add_get("/e2e/instances/c-1", instances)
    runner, url = await _serve(app)
    service = NvidiaRemoteAttestationService(
        attest_url=f"{nras_url}/v3/attest/gpu",
        jwks_url=f"{nras_url}/.well-known/jwks.json",
        issuer=nras.issuer,
    )
    verifier = EvidenceVerifier(
        _collateral(pki, time.time()), root_ca_der=pki.root_der, gpu_service=service
    )
    attestor = Attestor(
        verifier, [UpstreamAttestation("chutes", ChutesAdapter("c-1", api_base=url))]
    )
    try:
        await attestor.refresh("chutes")
    finally:
        await attestor.aclose()
        await verifier.aclose()
        await runner.cleanup()
    cache = attestor.cache
    assert {v.instance_id for v in cache.passing("chutes")} == {"i-1", "i-2"}
    verdict = cache.require("chutes", "i-1")
    assert verdict.evidence is not None and verdict.evidence.e2e_pubkey == "cHViMQ=="
    for instance, check in [("i-bad", "report_data"), ("i-down", "evidence_unavailable")]:
        with pytest.raises(AttestationFailed) as info:
            cache.require("chutes", instance)
        assert info.value.check == check
