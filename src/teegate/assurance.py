"""Attestation status per upstream, as the gate reads it on every request.

Hardware modes pass only on a fresh passing verdict from the attestor's cache
(a dict read, no I/O); anything else fails closed with the reason.
`provider-asserted` upstreams pass on the catalog flag alone, which the gate
has already checked, and are labelled so everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from teegate.attestation import (
    AttestationPolicy,
    AttestedTlsAdapter,
    Attestor,
    EvidenceAdapter,
    EvidenceVerifier,
    MeasurementAllowList,
    NvidiaRemoteAttestationService,
    PccsCollateralProvider,
    UpstreamAttestation,
)
from teegate.catalog import AttestationStatus
from teegate.config import AttestationSettings, Settings, UpstreamSettings
from teegate.errors import AttestationFailed, ConfigError

log = structlog.get_logger("teegate.assurance")

PROVIDER_ASSERTED = AttestationStatus(
    passed=True,
    mode="provider-asserted",
    header="mode=provider-asserted; verdict=none; verified_at=none; tcb=unverified",
)


class UpstreamAssurance:
    def __init__(self, upstreams: Iterable[UpstreamSettings], attestor: Attestor | None) -> None:
        self._asserted = {u.name for u in upstreams if u.attestation == "provider-asserted"}
        self._attestor = attestor
        self._refreshing: set[asyncio.Task[object]] = set()

    def __repr__(self) -> str:
        return f"UpstreamAssurance(provider_asserted={sorted(self._asserted)})"

    def status(self, upstream: str) -> AttestationStatus:
        if upstream in self._asserted:
            return PROVIDER_ASSERTED
        if self._attestor is None:
            return AttestationStatus(False, "unknown", f"{upstream} is not attested")
        try:
            verdict = self._attestor.cache.require(upstream)
        except AttestationFailed as failure:
            return AttestationStatus(False, "failed", f"{failure.check}: {failure.reason}")
        return AttestationStatus(
            passed=True,
            mode=verdict.mode,
            header=verdict.header_value(),
            verified_at=verdict.verified_at_s,
            tls_pin=verdict.tls_cert_sha256,
        )

    async def reports(self, upstream: str, nonce: bytes | None) -> list[dict[str, Any]]:
        """The evidence behind the upstream's verdicts, for a client to re-verify.

        With the client's nonce the upstream is attested afresh for this answer
        (never cached: a nonce teegate did not draw proves nothing to teegate).
        """
        if self._attestor is None or upstream in self._asserted:
            return []
        if nonce is None:
            verdicts = self._attestor.cache.verdicts(upstream)
        else:
            verdicts = await self._attestor.attest(upstream, nonce=nonce)
        return [verdict.to_report() for verdict in verdicts]

    def distrust(self, upstream: str, reason: str) -> None:
        if self._attestor is None or upstream in self._asserted:
            return
        log.warning("attestation_distrusted", upstream=upstream, reason=reason)
        self._attestor.cache.replace(upstream, ())
        self._attestor.cache.note_failure(upstream, AttestationFailed("tls_pin", reason))
        task: asyncio.Task[object] = asyncio.ensure_future(self._attestor.refresh(upstream))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)


@dataclass(frozen=True)
class AttestationRuntime:
    """The attestor and the verifier it owns, built from settings and closed together."""

    attestor: Attestor
    verifier: EvidenceVerifier

    async def start(self) -> None:
        """First verdicts before serving, then background refresh with fresh nonces."""
        await asyncio.gather(*(self.attestor.refresh(u) for u in self.attestor.upstreams))
        self.attestor.start()

    async def aclose(self) -> None:
        await self.attestor.aclose()
        await self.verifier.aclose()


def build_attestation(settings: Settings) -> AttestationRuntime | None:
    """None when every upstream is provider-asserted: there is nothing to verify."""
    attested = [u for u in settings.upstreams if u.attestation != "provider-asserted"]
    if not attested:
        return None
    config = settings.attestation
    root = config.dev_root_ca_file.read_bytes() if config.dev_root_ca_file else None
    verifier = EvidenceVerifier(
        PccsCollateralProvider(config.pccs_url),
        root_ca_der=root,
        gpu_service=NvidiaRemoteAttestationService(
            attest_url=config.nras_attest_url,
            jwks_url=config.nras_jwks_url,
            issuer=config.nras_issuer,
        ),
    )
    upstreams = [UpstreamAttestation(u.name, _adapter(u), _policy(config, u)) for u in attested]
    return AttestationRuntime(Attestor(verifier, upstreams), verifier)


def _adapter(upstream: UpstreamSettings) -> EvidenceAdapter:
    if upstream.attestation == "attested-tls":
        return AttestedTlsAdapter(upstream.base_url)
    raise ConfigError(
        f"upstreams.{upstream.name}.attestation: '{upstream.attestation}' evidence is verified "
        "(teegate.attestation.ChutesAdapter) but per-chute routing is not wired yet; "
        "use attested-tls or provider-asserted"
    )


def _policy(config: AttestationSettings, upstream: UpstreamSettings) -> AttestationPolicy:
    measurements = (
        MeasurementAllowList.from_file(config.measurements_file)
        if config.measurements_file
        else None
    )
    return AttestationPolicy(
        allowed_tcb_statuses=frozenset(config.allowed_tcb_statuses),
        measurements=measurements,
        require_gpu=config.require_gpu if upstream.require_gpu is None else upstream.require_gpu,
        verdict_ttl_s=config.verdict_ttl_s,
        refresh_margin_s=config.refresh_margin_s,
        retry_interval_s=config.retry_interval_s,
    )
