"""EvidenceVerifier: the production path with Intel's samples, GPU policy, fail-closed."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest

from teegate.attestation import (
    AttestationPolicy,
    CheckLog,
    Collateral,
    EvidenceVerifier,
    GpuEvidence,
    InstanceEvidence,
    StaticCollateralProvider,
    parse_jwks,
)
from teegate.devstack.tdx_pki import (
    LocalGpuAttestationService,
    TdxTestPki,
    collateral_window,
    fake_gpu_evidence,
)
from teegate.errors import AttestationFailed

FIXTURES = Path(__file__).parent / "fixtures" / "tdx"
NONCE = b"\x09" * 32


class RotatingGpuService:
    """A GPU service double behind the real Protocol, whose signing key can rotate."""

    def __init__(self) -> None:
        self.current = LocalGpuAttestationService()
        self.published = self.current
        self.key_fetches = 0

    @property
    def issuer(self) -> str:
        return self.current.issuer

    async def attest(self, evidence: GpuEvidence, nonce: bytes) -> Any:
        return self.current.attest(list(evidence.evidence_list), nonce.hex())

    async def signing_keys(self, *, refresh: bool = False) -> Mapping[str, jwt.PyJWK]:
        if refresh or self.key_fetches == 0:
            self.key_fetches += 1
            self.published = self.current
        return parse_jwks(self.published.jwks())

    async def aclose(self) -> None:
        return None


class ExplodingGpuService(RotatingGpuService):
    async def attest(self, evidence: GpuEvidence, nonce: bytes) -> Any:
        raise KeyError("unexpected")


@pytest.fixture(scope="module")
def pki() -> TdxTestPki:
    return TdxTestPki()


def _verifier(pki: TdxTestPki, gpu: Any = None) -> EvidenceVerifier:
    issued, next_update = collateral_window(time.time())
    text = pki.collateral_json(issued_at=issued, next_update=next_update)
    provider = StaticCollateralProvider(Collateral.from_json(text, source="t"))
    return EvidenceVerifier(provider, root_ca_der=pki.root_der, gpu_service=gpu)


def _evidence(pki: TdxTestPki, gpu: GpuEvidence | None = None) -> InstanceEvidence:
    report_data = b"\x01" * 32 + NONCE
    return InstanceEvidence(None, pki.quote(report_data), report_data, gpu=gpu)


async def test_intel_sample_passes_in_hardware_mode() -> None:
    raw = (FIXTURES / "tdx_quote").read_bytes()
    collateral = Collateral.from_json(
        (FIXTURES / "tdx_quote_collateral.json").read_text(), source="pccs"
    )
    verifier = EvidenceVerifier(StaticCollateralProvider(collateral), clock=lambda: 1752919234.0)
    report_data = bytes.fromhex(
        "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9"
        "eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
    )
    log = CheckLog()
    result = await verifier.verify(
        InstanceEvidence(None, raw, report_data),
        nonce=report_data[32:],
        policy=AttestationPolicy(require_gpu=False),
        log=log,
    )
    assert verifier.mode == "hardware"
    assert result.tdx.tcb_status == "UpToDate" and result.tdx.trust_root == "intel"
    assert result.gpu is None
    assert all(c.ok for c in log.checks)


async def test_required_gpu_without_evidence_is_refused(pki: TdxTestPki) -> None:
    log = CheckLog()
    with pytest.raises(AttestationFailed) as info:
        await _verifier(pki, RotatingGpuService()).verify(
            _evidence(pki), nonce=NONCE, policy=AttestationPolicy(), log=log
        )
    assert info.value.check == "gpu_evidence"
    assert [c.name for c in log.checks][-1] == "gpu_evidence"
    assert log.checks[-2].name == "measurements" and log.checks[-2].ok


async def test_rotated_gpu_key_is_refetched_once(pki: TdxTestPki) -> None:
    service = RotatingGpuService()
    verifier = _verifier(pki, service)
    gpu = GpuEvidence(evidence_list=tuple(fake_gpu_evidence(2)))
    await verifier.verify(
        _evidence(pki, gpu), nonce=NONCE, policy=AttestationPolicy(), log=CheckLog()
    )
    service.current = LocalGpuAttestationService()  # NRAS rotates its signing key
    result = await verifier.verify(
        _evidence(pki, gpu), nonce=NONCE, policy=AttestationPolicy(), log=CheckLog()
    )
    assert result.gpu is not None and len(result.gpu.devices) == 2
    assert service.key_fetches == 2


async def test_unexpected_gpu_service_errors_become_rejections(pki: TdxTestPki) -> None:
    gpu = GpuEvidence(evidence_list=tuple(fake_gpu_evidence(1)))
    log = CheckLog()
    with pytest.raises(AttestationFailed) as info:
        await _verifier(pki, ExplodingGpuService()).verify(
            _evidence(pki, gpu), nonce=NONCE, policy=AttestationPolicy(), log=log
        )
    assert info.value.check == "internal"
    assert log.checks[-1].name == "internal" and not log.checks[-1].ok


async def test_gpu_evidence_without_a_service_is_skipped_only_when_optional(
    pki: TdxTestPki,
) -> None:
    gpu = GpuEvidence(evidence_list=tuple(fake_gpu_evidence(1)))
    verifier = _verifier(pki)
    result = await verifier.verify(
        _evidence(pki, gpu),
        nonce=NONCE,
        policy=AttestationPolicy(require_gpu=False),
        log=CheckLog(),
    )
    assert result.gpu is None
    with pytest.raises(AttestationFailed) as info:
        await verifier.verify(
            _evidence(pki, gpu), nonce=NONCE, policy=AttestationPolicy(), log=CheckLog()
        )
    assert info.value.check == "gpu_evidence"
