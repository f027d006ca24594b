"""One instance's evidence, verified end to end: collateral, TDX quote, GPU tokens.

This is the boundary where every dependency error (dcap-qvl, cryptography, PyJWT,
aiohttp) has become `AttestationFailed`; anything else that escapes a check is an
internal error and is turned into a rejection too (check `internal`), never a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from teegate.attestation._check import CheckLog, summarize
from teegate.attestation._collateral import Collateral, CollateralProvider
from teegate.attestation._evidence import InstanceEvidence
from teegate.attestation._gpu import (
    GpuAttestationService,
    GpuEvidence,
    GpuVerification,
    verify_gpu_tokens,
)
from teegate.attestation._policy import AttestationPolicy
from teegate.attestation._tdx import TdxVerification, verify_tdx_quote
from teegate.attestation._verdict import VerdictMode
from teegate.errors import AttestationFailed

__all__ = ["EvidenceVerifier", "VerifiedInstance"]


@dataclass(frozen=True)
class VerifiedInstance:
    tdx: TdxVerification
    collateral: Collateral
    gpu: GpuVerification | None


class EvidenceVerifier:
    """Verifies evidence against one trust root, collateral source and GPU service.

    `root_ca_der=None` is Intel's SGX root: verdicts are `hardware`. Any other root
    (the dev stack's test PKI) makes them `simulated`, so a test root can never pass
    for real hardware.
    """

    def __init__(
        self,
        collateral: CollateralProvider,
        *,
        root_ca_der: bytes | None = None,
        gpu_service: GpuAttestationService | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._collateral = collateral
        self._root_ca_der = root_ca_der
        self._gpu_service = gpu_service
        self._clock = clock

    def __repr__(self) -> str:
        return f"EvidenceVerifier(mode={self.mode!r}, collateral={self._collateral!r})"

    @property
    def mode(self) -> VerdictMode:
        return "hardware" if self._root_ca_der is None else "simulated"

    @property
    def has_gpu_service(self) -> bool:
        return self._gpu_service is not None

    async def refresh_collateral(self) -> None:
        """Fetch the cached collateral again (the attestor re-attests after it)."""
        await self._collateral.refresh()

    async def aclose(self) -> None:
        """Close the GPU service's HTTP session; the verifier's owner calls this."""
        if self._gpu_service is not None:
            await self._gpu_service.aclose()

    async def verify(
        self,
        evidence: InstanceEvidence,
        *,
        nonce: bytes,
        policy: AttestationPolicy,
        log: CheckLog,
    ) -> VerifiedInstance:
        """Verify or raise `AttestationFailed`; every check run is in `log` either way."""
        try:
            return await self._verify(evidence, nonce, policy, log)
        except AttestationFailed as failure:
            log.record(failure)
            raise
        except Exception as exc:  # a bug or an unmapped dependency error: reject
            internal = AttestationFailed("internal", f"verifier error: {summarize(exc)}")
            log.record(internal)
            raise internal from exc

    async def _verify(
        self, evidence: InstanceEvidence, nonce: bytes, policy: AttestationPolicy, log: CheckLog
    ) -> VerifiedInstance:
        now_s = int(self._clock())
        collateral = await self._collateral.collateral_for(evidence.quote, now_s)
        tdx = verify_tdx_quote(
            evidence.quote,
            collateral,
            expected_report_data=evidence.expected_report_data,
            policy=policy,
            now_s=now_s,
            root_ca_der=self._root_ca_der,
            checks=log,
        )
        gpu = await self._verify_gpu(evidence.gpu, nonce, policy, log, now_s)
        return VerifiedInstance(tdx, collateral, gpu)

    async def _verify_gpu(
        self,
        evidence: GpuEvidence | None,
        nonce: bytes,
        policy: AttestationPolicy,
        log: CheckLog,
        now_s: int,
    ) -> GpuVerification | None:
        if evidence is None or not evidence.present:
            if policy.require_gpu:
                log.fail("gpu_evidence", "GPU evidence is required but none was presented")
            log.passed("gpu_evidence", "none presented; not required by policy")
            return None
        service = self._gpu_service
        if service is None:
            if policy.require_gpu:
                log.fail("gpu_evidence", "GPU evidence is required but no GPU service is set")
            log.passed("gpu_evidence", "presented but not verified: no GPU service; not required")
            return None
        log.passed("gpu_evidence", f"{len(evidence.evidence_list) or 'token'} item(s) presented")
        tokens = (
            evidence.tokens
            if evidence.tokens is not None
            else await service.attest(evidence, nonce)
        )
        keys = await self._keys_for(service, tokens)
        return verify_gpu_tokens(
            tokens,
            keys,
            nonce=nonce,
            now_s=now_s,
            issuer=service.issuer,
            log=log,
            expected_gpus=len(evidence.evidence_list) or None,
        )

    @staticmethod
    async def _keys_for(service: GpuAttestationService, tokens: Any) -> Mapping[str, jwt.PyJWK]:
        """The service's keys, refetched once if a token names a kid not yet known."""
        keys = await service.signing_keys()
        if not _token_kids(tokens) <= set(keys):
            keys = await service.signing_keys(refresh=True)
        return keys


def _token_kids(tokens: Any) -> set[str]:
    """Key ids named by the tokens' headers (unverified: only to pick keys)."""
    if isinstance(tokens, str):
        candidates: list[Any] = [tokens]
    elif isinstance(tokens, list) and len(tokens) == 2 and isinstance(tokens[1], dict):
        overall = tokens[0][1] if isinstance(tokens[0], list) and len(tokens[0]) == 2 else None
        candidates = [overall, *tokens[1].values()]
    else:
        return set()
    kids = set()
    for token in candidates:
        try:
            kids.add(str(jwt.get_unverified_header(str(token)).get("kid")))
        except jwt.PyJWTError:
            continue
    return kids
