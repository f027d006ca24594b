"""The devstack attests for real: the gateway's own verifier checks it end to end.

Both simulated parties run as real servers on loopback: the enclave upstream over
TLS (its quotes bind that TLS key) and the attestation services (Intel PCS and
NVIDIA NRAS stand-ins) over HTTP. What they serve is checked by the production
code path: `PccsCollateralProvider` (dcap-qvl's own PCS client), dcap-qvl against
the dev root, `NvidiaRemoteAttestationService`, and the real adapters. Each fault
is switched on through the admin endpoints and must fail the check it attacks.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from teegate.attestation import (
    AttestationPolicy,
    Attestor,
    EvidenceAdapter,
    EvidenceVerifier,
    MeasurementAllowList,
    PccsCollateralProvider,
    UpstreamAttestation,
    Verdict,
)
from teegate.attestation.http import (
    AttestedTlsAdapter,
    ChutesAdapter,
    EvidenceHttpClient,
    NvidiaRemoteAttestationService,
)
from teegate.devstack import (
    SERVICES_FAULTS,
    DevstackConfig,
    SimulatedAttestationServices,
    SimulatedEnclave,
    build_app,
    build_services_app,
    devstack_servers,
)
from teegate.devstack.tdx_pki import DEFAULT_MR_TD
from tests.support.servers import ServerThread, free_port, serving

API_KEY = "sk-devstack-attestation"
POLICY = AttestationPolicy(
    measurements=MeasurementAllowList.from_mapping({"mrtd": [DEFAULT_MR_TD.hex()]})
)


@dataclass
class Stack:
    enclave: SimulatedEnclave
    services: SimulatedAttestationServices
    upstream: ServerThread
    services_url: str
    certfile: Path

    def admin(self, base_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with httpx.Client(base_url=base_url, verify=False) as client:  # loopback admin only
            return client.request(method, f"/admin/{path}", **kwargs)

    def set_enclave_faults(self, *faults: str) -> None:
        self.admin(
            self.upstream.url, "PUT", "faults", json={"faults": list(faults)}
        ).raise_for_status()

    def set_services_faults(self, *faults: str) -> None:
        self.admin(
            self.services_url, "PUT", "faults", json={"faults": list(faults)}
        ).raise_for_status()

    def verifier(
        self, *, issuer: str = SimulatedAttestationServices.issuer, dev_root: bool = True
    ) -> EvidenceVerifier:
        return make_verifier(self.enclave, self.services_url, issuer=issuer, dev_root=dev_root)

    def attested_tls(self) -> AttestedTlsAdapter:
        return AttestedTlsAdapter(self.upstream.url)

    def chutes(self) -> ChutesAdapter:
        """The Chutes API is CA-verified TLS: trust the devstack's self-signed certificate."""
        http = EvidenceHttpClient(
            ssl_context=ssl.create_default_context(cafile=self.certfile),
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        return ChutesAdapter("chute-dev", api_base=self.upstream.url, http=http)


def make_verifier(
    enclave: SimulatedEnclave,
    services_url: str,
    *,
    issuer: str = SimulatedAttestationServices.issuer,
    dev_root: bool = True,
) -> EvidenceVerifier:
    """The gateway's production verifier, pointed at the services and (dev_root) the dev root."""
    nras = NvidiaRemoteAttestationService(
        attest_url=f"{services_url}/v3/attest/gpu",
        jwks_url=f"{services_url}/.well-known/jwks.json",
        issuer=issuer,
    )
    collateral = PccsCollateralProvider(services_url)
    root = enclave.root_ca_der if dev_root else None
    return EvidenceVerifier(collateral, root_ca_der=root, gpu_service=nras)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    enclave = SimulatedEnclave()
    services = SimulatedAttestationServices(enclave)
    certfile, keyfile = enclave.write_tls_files(tmp_path_factory.mktemp("enclave"))
    app = build_app(DevstackConfig(api_key=API_KEY), enclave=enclave)
    tls = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}
    with (
        serving(app, **tls, ssl_context_factory=enclave.ssl_context_factory) as upstream,
        serving(build_services_app(services)) as services_server,
    ):
        yield Stack(enclave, services, upstream, services_server.url, certfile)


@pytest.fixture(autouse=True)
def _reset(stack: Stack) -> Iterator[None]:
    yield
    stack.admin(stack.upstream.url, "POST", "reset").raise_for_status()
    stack.admin(stack.services_url, "POST", "reset").raise_for_status()


async def attest(
    adapter: EvidenceAdapter, verifier: EvidenceVerifier, *, close: bool = True
) -> tuple[Verdict, ...]:
    """One attestation round with a fresh nonce, as the gateway's refresher does it."""
    attestor = Attestor(verifier, [UpstreamAttestation("devstack", adapter, POLICY)])
    try:
        return await attestor.attest("devstack", nonce=secrets.token_bytes(32))
    finally:
        await attestor.aclose()
        if close:
            await verifier.aclose()


def failed_checks(verdicts: tuple[Verdict, ...]) -> set[str | None]:
    return {v.failed_check for v in verdicts}


# --- clean verdicts -------------------------------------------------------------------------------


async def test_attested_tls_passes_end_to_end(stack: Stack) -> None:
    (verdict,) = await attest(stack.attested_tls(), stack.verifier())
    assert verdict.passed, verdict.reason
    assert verdict.mode == "simulated"
    assert verdict.tcb_status == "UpToDate"
    assert verdict.measurements["mrtd"] == DEFAULT_MR_TD.hex()
    assert verdict.tls_cert_sha256 == stack.enclave.tls_cert_sha256
    assert [g.name for g in verdict.gpus] == ["GPU-0"]
    stats = stack.admin(stack.services_url, "GET", "stats").json()
    assert stats["pcs_requests"] == 4  # pckcrl, tcb, qe/identity, rootcacrl
    assert stats["gpu_attestations"] == 1


async def test_chutes_passes_for_each_instance(stack: Stack) -> None:
    verdicts = await attest(stack.chutes(), stack.verifier())
    assert all(v.passed for v in verdicts), [v.reason for v in verdicts]
    assert {v.instance_id for v in verdicts} == set(stack.enclave.chutes_instance_ids)
    assert len(verdicts) == 2
    keys = {v.evidence.e2e_pubkey for v in verdicts if v.evidence}
    assert len(keys) == 2


async def test_intel_root_and_nvidia_issuer_refuse_the_simulation(stack: Stack) -> None:
    """A test root never passes for hardware, and dev NRAS tokens never pass for NVIDIA's."""
    intel = stack.verifier(dev_root=False)
    assert failed_checks(await attest(stack.attested_tls(), intel)) == {"quote_signature"}
    nvidia = stack.verifier(issuer="https://nras.attestation.nvidia.com")
    assert failed_checks(await attest(stack.attested_tls(), nvidia)) == {"gpu_signature"}


# --- enclave faults -------------------------------------------------------------------------------

ENCLAVE_CASES = {
    "attest-replay": "report_data",
    "attest-unbound": "report_data",
    "attest-debug": "debug",
    "attest-wrong-mrtd": "measurements",
    "attest-tampered": "quote_signature",
    "attest-down": "evidence_unavailable",
    "attest-no-gpu": "gpu_evidence",
}


@pytest.mark.parametrize("mode", ["attested-tls", "chutes"])
@pytest.mark.parametrize(("fault", "check"), sorted(ENCLAVE_CASES.items()))
async def test_enclave_fault_fails_its_check(
    stack: Stack, mode: str, fault: str, check: str
) -> None:
    adapter = stack.attested_tls if mode == "attested-tls" else stack.chutes
    assert all(v.passed for v in await attest(adapter(), stack.verifier()))  # also: a nonce seen
    stack.set_enclave_faults(fault)
    assert failed_checks(await attest(adapter(), stack.verifier())) == {check}


async def test_tls_key_swap_serves_a_new_key_the_quotes_do_not_bind(stack: Stack) -> None:
    stack.set_enclave_faults("tls-key-swap")
    (verdict,) = await attest(stack.attested_tls(), stack.verifier())
    assert verdict.failed_check == "report_data"
    assert verdict.evidence is not None
    assert verdict.evidence.tls_cert_sha256 not in {None, stack.enclave.tls_cert_sha256}
    stack.set_enclave_faults()
    (verdict,) = await attest(stack.attested_tls(), stack.verifier())
    assert verdict.passed
    assert verdict.tls_cert_sha256 == stack.enclave.tls_cert_sha256


def test_evidence_endpoints_check_the_nonce_and_the_api_key(stack: Stack) -> None:
    with httpx.Client(base_url=stack.upstream.url, verify=False) as client:
        response = client.get("/v1/attestation/report", params={"nonce": "ab" * 31})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "nonce"
        assert client.get("/chutes/x/evidence", params={"nonce": "ab" * 32}).status_code == 401


def test_enclave_faults_need_an_enclave() -> None:
    with pytest.raises(ValueError, match="unknown fault 'attest-down'"):
        build_app(DevstackConfig(faults=frozenset({"attest-down"})))


def test_enclave_refuses_to_serve_another_certificate(tmp_path: Path) -> None:
    enclave = SimulatedEnclave()
    certfile, keyfile = SimulatedEnclave().write_tls_files(tmp_path)
    config = uvicorn.Config(build_app(DevstackConfig(), enclave=enclave), ssl_certfile=certfile)
    with pytest.raises(ValueError, match="own certificate"):
        enclave.ssl_context_factory(config, ssl.create_default_context)
    assert keyfile.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in repr(enclave)


# --- services faults ------------------------------------------------------------------------------

SERVICES_CASES = {
    "tcb-revoked": "tcb_status",
    "tcb-outofdate": "tcb_status",
    "collateral-expired": "collateral",
    "gpu-bad-signature": "gpu_signature",
    "gpu-wrong-nonce": "gpu_nonce",
    "gpu-failed": "gpu_result",
    "services-down": "collateral_unavailable",
}


SLOWDOWNS = {"nras-slow"}
"""Faults that fail no check, only take longer (concurrency tests use them)."""


def test_every_services_fault_is_tested() -> None:
    assert set(SERVICES_CASES) | SLOWDOWNS == SERVICES_FAULTS


async def test_a_slow_nras_still_passes(stack: Stack) -> None:
    stack.set_services_faults("nras-slow")
    assert all(v.passed for v in await attest(stack.attested_tls(), stack.verifier()))


@pytest.mark.parametrize(("fault", "check"), sorted(SERVICES_CASES.items()))
async def test_services_fault_fails_its_check(stack: Stack, fault: str, check: str) -> None:
    stack.set_services_faults(fault)
    assert failed_checks(await attest(stack.attested_tls(), stack.verifier())) == {check}


async def test_services_down_with_cached_collateral_fails_at_nras(stack: Stack) -> None:
    verifier = stack.verifier()
    try:
        assert all(v.passed for v in await attest(stack.attested_tls(), verifier, close=False))
        stack.set_services_faults("services-down")
        verdicts = await attest(stack.attested_tls(), verifier, close=False)
        assert failed_checks(verdicts) == {"gpu_service_unavailable"}
    finally:
        await verifier.aclose()


def test_services_admin_switches_and_resets_faults(stack: Stack) -> None:
    url = stack.services_url
    assert stack.admin(url, "GET", "faults").json() == {"faults": []}
    stack.set_services_faults("services-down", "gpu-failed")
    assert httpx.get(f"{url}/.well-known/jwks.json").status_code == 503
    assert stack.admin(url, "GET", "faults").json() == {"faults": ["gpu-failed", "services-down"]}
    refused = stack.admin(url, "PUT", "faults", json={"faults": ["attest-down"]})
    assert refused.status_code == 400
    assert stack.admin(url, "POST", "reset").json()["faults"] == []
    assert httpx.get(f"{url}/root-ca.der").content == stack.enclave.root_ca_der


def test_nras_refuses_malformed_requests(stack: Stack) -> None:
    url = f"{stack.services_url}/v3/attest/gpu"
    evidence = [{"certificate": "AA==", "evidence": "AA=="}]
    assert httpx.post(url, json={"nonce": "zz", "evidence_list": evidence}).status_code == 400
    assert httpx.post(url, json={"nonce": "ab" * 32, "evidence_list": []}).status_code == 400
    assert httpx.post(url, content=b"not json").status_code == 400


# --- the CLI's serve path (uvloop, as `teegate devstack` runs it) ---------------------------------


async def test_devstack_servers_attest_under_uvloop(tmp_path: Path) -> None:
    enclave = SimulatedEnclave()
    port, services_port = free_port(), free_port()
    servers = devstack_servers(
        DevstackConfig(),
        enclave=enclave,
        host="127.0.0.1",
        port=port,
        services_port=services_port,
        tls_dir=tmp_path,
    )
    assert (tmp_path / "root-ca.der").read_bytes() == enclave.root_ca_der
    upstream_url, services_url = f"https://127.0.0.1:{port}", f"http://127.0.0.1:{services_port}"
    with _running(servers):
        (verdict,) = await attest(
            AttestedTlsAdapter(upstream_url), make_verifier(enclave, services_url)
        )
        assert verdict.passed, verdict.reason
        assert verdict.tls_cert_sha256 == enclave.tls_cert_sha256
        with httpx.Client(base_url=upstream_url, verify=False) as admin:
            admin.put("/admin/faults", json={"faults": ["tls-key-swap"]}).raise_for_status()
        (verdict,) = await attest(
            AttestedTlsAdapter(upstream_url), make_verifier(enclave, services_url)
        )
        assert verdict.failed_check == "report_data"


class _running:
    """Run uvicorn servers on their own (uvloop) event loop in a thread."""

    def __init__(self, servers: tuple[uvicorn.Server, ...]) -> None:
        self._servers = servers
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def serve_all() -> None:
            await asyncio.gather(*(s.serve() for s in self._servers))

        factory = self._servers[0].config.get_loop_factory()
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve_all())

    def __enter__(self) -> None:
        self._thread.start()
        while not all(s.started for s in self._servers):
            assert self._thread.is_alive(), "devstack servers did not start"
            threading.Event().wait(0.01)

    def __exit__(self, *_exc: object) -> None:
        for server in self._servers:
            server.should_exit = True
        self._thread.join(timeout=15)
