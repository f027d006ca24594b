"""The attestation services a real TEE upstream relies on, simulated for the enclave's test PKI.

Intel's PCS (DCAP collateral: CRLs, TCB info, QE identity) and NVIDIA's remote
attestation service (NRAS: GPU evidence in, ES384 tokens out, keys at a JWKS).
The gateway's production clients (`PccsCollateralProvider`, which is dcap-qvl's
own PCS client, and `NvidiaRemoteAttestationService`) talk to them unchanged.
The services faults (`SERVICES_FAULTS`) change what they answer; the app that
serves them is in `_services_app.py`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from teegate.devstack._enclave import SimulatedEnclave
from teegate.devstack._faults import (
    COLLATERAL_EXPIRED,
    GPU_BAD_SIGNATURE,
    GPU_FAILED,
    GPU_WRONG_NONCE,
    SERVICES_FAULTS,
    TCB_OUT_OF_DATE,
    TCB_REVOKED,
    FaultState,
)
from teegate.devstack.tdx_pki import LocalGpuAttestationService, collateral_window

_EXPIRED_AGO_S = 90 * 86400  # the expired window ends 60 days ago


@dataclass
class ServicesStats:
    """Requests received, so tests can prove what the gateway asked for (and did not)."""

    pcs_requests: int = 0
    gpu_attestations: int = 0
    jwks_requests: int = 0
    gpu_attestations_running: int = 0
    max_concurrent_gpu_attestations: int = 0

    def reset(self) -> None:
        self.pcs_requests = self.gpu_attestations = self.jwks_requests = 0
        self.max_concurrent_gpu_attestations = self.gpu_attestations_running

    def gpu_attestation_started(self) -> None:
        self.gpu_attestations += 1
        self.gpu_attestations_running += 1
        self.max_concurrent_gpu_attestations = max(
            self.max_concurrent_gpu_attestations, self.gpu_attestations_running
        )

    def gpu_attestation_ended(self) -> None:
        self.gpu_attestations_running -= 1

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class SimulatedAttestationServices:
    """Intel PCS and NVIDIA NRAS stand-ins, sharing the enclave's test PKI.

    NRAS tokens are issued as `issuer` (not NVIDIA's issuer, so a gateway set up
    for NVIDIA refuses them) and signed by a local key published at the JWKS.
    `faults` and `stats` are what the services' admin endpoints act on.
    """

    issuer: ClassVar[str] = "https://nras.devstack.invalid"

    def __init__(self, enclave: SimulatedEnclave, *, faults: frozenset[str] = frozenset()) -> None:
        self.pki = enclave.pki
        self.faults = FaultState(faults, known=SERVICES_FAULTS)
        self.stats = ServicesStats()
        self._nras = LocalGpuAttestationService(issuer=self.issuer)
        self._rogue = LocalGpuAttestationService(issuer=self.issuer)
        self._rogue.kid = self._nras.kid  # the same key id, another key: only the signature tells
        now_s = time.time()
        self._window = collateral_window(now_s)
        self._expired_window = collateral_window(now_s - _EXPIRED_AGO_S)

    def __repr__(self) -> str:
        return f"SimulatedAttestationServices({self.pki!r}, faults={sorted(self.faults.active)})"

    def collateral(self) -> dict[str, str]:
        """QuoteCollateralV3 fields for the enclave's platform, as the faults have them now."""
        issued_at, next_update = (
            self._expired_window if self.faults.is_on(COLLATERAL_EXPIRED) else self._window
        )
        text = self.pki.collateral_json(
            issued_at=issued_at, next_update=next_update, tcb_status=self._tcb_status()
        )
        parts: dict[str, str] = json.loads(text)
        return parts

    def jwks(self) -> dict[str, Any]:
        return self._nras.jwks()

    def attest_gpu(self, evidence_list: Sequence[Mapping[str, Any]], nonce_hex: str) -> list[Any]:
        """NRAS v3's answer: `[["JWT", overall], {"GPU-0": token, ...}]` for this nonce."""
        signer = self._rogue if self.faults.is_on(GPU_BAD_SIGNATURE) else self._nras
        if self.faults.is_on(GPU_WRONG_NONCE):
            nonce_hex = secrets.token_hex(32)
        return signer.attest(
            evidence_list, nonce_hex, overall_result=not self.faults.is_on(GPU_FAILED)
        )

    def _tcb_status(self) -> str:
        if self.faults.is_on(TCB_REVOKED):
            return "Revoked"
        return "OutOfDate" if self.faults.is_on(TCB_OUT_OF_DATE) else "UpToDate"
