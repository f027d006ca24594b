"""Attestation status per catalog offer, as the gate reads it on every request.

Hardware modes pass only on a fresh passing verdict from the attestor's cache
(a dict read, no I/O); anything else fails closed with the reason.
`attested-tls` upstreams are attested as a whole (attestor key: the upstream's
name). `chutes` upstreams are attested per chute: one attestation for every chute
id their catalog lists (key `<upstream>#<chute_id>`), added as the catalog lists
it and removed when the catalog stops listing it; an offer passes on a fresh
passing verdict of at least one instance of its chute. Chutes traffic is
CA-verified TLS only, not bound to the attested instance (no end-to-end
encryption), and says so. `provider-asserted` upstreams pass on the catalog
flag alone, which the gate has already checked, and are labelled so everywhere.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from teegate.attestation import (
    AttestationPolicy,
    Attestor,
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
from teegate.catalog import AttestationStatus, CatalogModel
from teegate.config import AttestationSettings, Settings, UpstreamSettings
from teegate.errors import AttestationFailed

log = structlog.get_logger("teegate.assurance")

PROVIDER_ASSERTED = AttestationStatus(
    passed=True,
    mode="provider-asserted",
    header="mode=provider-asserted; verdict=none; verified_at=none; tcb=unverified",
)
#: Appended to a chute's `X-TEE-Attestation`: the evidence is Chutes', and requests
#: go over CA-verified TLS, not bound to the attested instance's key.
CHUTES_HEADER_SUFFIX = "; evidence=chutes; channel=unbound"
#: At most this many chutes are attested per upstream (each has its own refresh loop).
MAX_CHUTES_PER_UPSTREAM = 1024
#: Fresh attestations for clients' nonces (the report endpoint) running at once per
#: upstream, whoever asks; more wait their turn.
MAX_FRESH_ATTESTATIONS = 2


def chute_key(upstream: str, chute_id: str) -> str:
    """The attestor key of one chute (upstream names cannot contain '#')."""
    return f"{upstream}#{chute_id}"


class UpstreamAssurance:
    def __init__(self, upstreams: Iterable[UpstreamSettings], attestor: Attestor | None) -> None:
        upstreams = tuple(upstreams)
        self._asserted = {u.name for u in upstreams if u.attestation == "provider-asserted"}
        self._chutes = {u.name for u in upstreams if u.attestation == "chutes"}
        self._attestor = attestor
        self._refreshing: set[asyncio.Task[object]] = set()
        self._fresh: dict[tuple[str, bytes], asyncio.Future[tuple[Verdict, ...]]] = {}
        self._fresh_slots: dict[str, asyncio.Semaphore] = {}

    def __repr__(self) -> str:
        return (
            f"UpstreamAssurance(provider_asserted={sorted(self._asserted)}, "
            f"chutes={sorted(self._chutes)})"
        )

    def status(self, offer: CatalogModel) -> AttestationStatus:
        """The request path: the offer's upstream's verdict, or its chute's."""
        upstream = offer.upstream
        if upstream in self._chutes:
            if offer.chute_id is None:
                reason = f"{upstream} lists '{offer.id}' without a chute_id to attest"
                return AttestationStatus(False, "failed", reason)
            return self._verdict_status(chute_key(upstream, offer.chute_id), chutes=True)
        if upstream in self._asserted:
            return PROVIDER_ASSERTED
        return self._verdict_status(upstream)

    def upstream_status(self, upstream: str) -> AttestationStatus:
        """The upstream as a whole (readiness, the TLS pin): a chutes upstream passes
        when any chute of it does."""
        if upstream in self._asserted:
            return PROVIDER_ASSERTED
        if upstream not in self._chutes:
            return self._verdict_status(upstream)
        keys = self._chute_keys(upstream)
        failures = []
        for key in keys:
            status = self._verdict_status(key, chutes=True)
            if status.passed:
                return status
            failures.append(f"{key}: {status.reason}")
        if not failures:
            return AttestationStatus(False, "failed", f"no chute of {upstream} is attested")
        more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
        return AttestationStatus(False, "failed", "; ".join(failures[:3]) + more)

    def _verdict_status(self, key: str, *, chutes: bool = False) -> AttestationStatus:
        if self._attestor is None:
            return AttestationStatus(False, "unknown", f"{key} is not attested")
        try:
            verdict = self._attestor.cache.require(key)
        except AttestationFailed as failure:
            return AttestationStatus(False, "failed", f"{failure.check}: {failure.reason}")
        if chutes:  # the instance certificate is Chutes', not this connection's: no pin
            return AttestationStatus(
                passed=True,
                mode=verdict.mode,
                header=verdict.header_value() + CHUTES_HEADER_SUFFIX,
                verified_at=verdict.verified_at_s,
                channel="unbound",
                tcb_status=verdict.tcb_status,
                gpu=bool(verdict.gpus),
                measurements=verdict.measurements,
                verdict=verdict,
            )
        return AttestationStatus(
            passed=True,
            mode=verdict.mode,
            header=verdict.header_value(),
            verified_at=verdict.verified_at_s,
            tls_pin=verdict.tls_cert_sha256,
            channel="pinned",
            tcb_status=verdict.tcb_status,
            gpu=bool(verdict.gpus),
            measurements=verdict.measurements,
            verdict=verdict,
            e2ee=verdict.e2ee,
        )

    def _chute_keys(self, upstream: str) -> list[str]:
        prefix = chute_key(upstream, "")
        keys = self._attestor.upstreams if self._attestor else ()
        return sorted(k for k in keys if k.startswith(prefix))

    def _key(self, offer: CatalogModel) -> str | None:
        """The attestor key behind an offer; None when nothing is attested for it."""
        if self._attestor is None or offer.upstream in self._asserted:
            return None
        if offer.upstream in self._chutes:
            if offer.chute_id is None:
                return None
            key = chute_key(offer.upstream, offer.chute_id)
        else:
            key = offer.upstream
        return key if key in self._attestor.upstreams else None

    async def reports(self, offer: CatalogModel, nonce: bytes | None) -> list[dict[str, Any]]:
        """The evidence behind the offer's verdicts, for a client to re-verify.

        With the client's nonce the upstream (or chute) is attested afresh for this
        answer (never cached: a nonce teegate did not draw proves nothing to teegate).
        """
        key = self._key(offer)
        if self._attestor is None or key is None:
            return []
        if nonce is None:
            verdicts = self._attestor.cache.verdicts(key)
        else:
            verdicts = await self._attest_fresh(key, nonce)
        return [verdict.to_report() for verdict in verdicts]

    async def _attest_fresh(self, key: str, nonce: bytes) -> tuple[Verdict, ...]:
        """One attestation per (upstream, nonce) however many ask at once, and at
        most MAX_FRESH_ATTESTATIONS of them per upstream at a time: each one costs
        the upstream, the PCS and NVIDIA's service a full round. Shielded, so a
        client that leaves does not cancel what others wait on."""
        flight = (key, nonce)
        task = self._fresh.get(flight)
        if task is None:
            task = asyncio.ensure_future(self._attest_in_slot(key, nonce))
            self._fresh[flight] = task
            task.add_done_callback(lambda _: self._fresh.pop(flight, None))
        return await asyncio.shield(task)

    async def _attest_in_slot(self, key: str, nonce: bytes) -> tuple[Verdict, ...]:
        assert self._attestor is not None
        slots = self._fresh_slots.setdefault(key, asyncio.Semaphore(MAX_FRESH_ATTESTATIONS))
        async with slots:
            return await self._attestor.attest(key, nonce=nonce)

    def distrust(self, upstream: str, reason: str) -> None:
        """attested-tls only: the pinned key changed (chutes traffic is not pinned)."""
        if self._attestor is None or upstream in self._asserted or upstream in self._chutes:
            return
        log.warning("attestation_distrusted", upstream=upstream, reason=reason)
        self._attestor.cache.replace(upstream, ())
        self._attestor.cache.note_failure(upstream, AttestationFailed("tls_pin", reason))
        task: asyncio.Task[object] = asyncio.ensure_future(self._attestor.refresh(upstream))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)


class ChuteAttestations:
    """One attestation per chute of each `chutes` upstream, following its catalog.

    `follow` is called with every listing of the upstream's catalog: a chute id new
    to it gets its own `ChutesAdapter` and refresh loop; a chute id no longer
    listed is removed (loop stopped, adapter closed, verdicts dropped).
    """

    def __init__(
        self, attestor: Attestor, config: AttestationSettings, upstreams: Iterable[UpstreamSettings]
    ) -> None:
        self._attestor = attestor
        self._config = config
        self._upstreams = {u.name: u for u in upstreams if u.attestation == "chutes"}
        self._ssl = {
            name: evidence_ssl_context(u)
            for name, u in self._upstreams.items()
            if u.evidence_ca_file is not None
        }
        self._followed: dict[str, frozenset[str]] = {}

    def __repr__(self) -> str:
        return f"ChuteAttestations(upstreams={sorted(self._upstreams)})"

    @property
    def upstreams(self) -> frozenset[str]:
        return frozenset(self._upstreams)

    def chute_ids(self, upstream: str) -> frozenset[str]:
        return self._followed.get(upstream, frozenset())

    async def follow(self, upstream: str, chute_ids: Iterable[str]) -> None:
        settings = self._upstreams[upstream]
        wanted = frozenset(sorted(set(chute_ids))[:MAX_CHUTES_PER_UPSTREAM])
        current = self._followed.get(upstream, frozenset())
        self._followed[upstream] = wanted
        for chute_id in sorted(wanted - current):
            self._attestor.add(
                UpstreamAttestation(
                    chute_key(upstream, chute_id),
                    self._adapter(settings, chute_id),
                    _policy(self._config, settings),
                )
            )
        for chute_id in sorted(current - wanted):
            await self._attestor.remove(chute_key(upstream, chute_id))
        if wanted != current:
            log.info(
                "attestation.chutes_followed",
                upstream=upstream,
                chutes=len(wanted),
                added=len(wanted - current),
                removed=len(current - wanted),
            )

    def _adapter(self, settings: UpstreamSettings, chute_id: str) -> ChutesAdapter:
        api_key = settings.api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        http = EvidenceHttpClient(ssl_context=self._ssl.get(settings.name), headers=headers)
        return ChutesAdapter(chute_id, api_base=settings.evidence_url, http=http)


def evidence_ssl_context(upstream: UpstreamSettings) -> ssl.SSLContext | None:
    """Development only (refused in production): trust `evidence_ca_file` instead of
    the system CAs, for the Chutes API and for the upstream's inference traffic."""
    if upstream.evidence_ca_file is None:
        return None
    return ssl.create_default_context(cafile=str(upstream.evidence_ca_file))


@dataclass(frozen=True)
class AttestationRuntime:
    """The attestor, the verifier it owns and the chutes it follows, closed together."""

    attestor: Attestor
    verifier: EvidenceVerifier
    chutes: ChuteAttestations

    async def attest_pending(self) -> None:
        """A first verdict for every attestation that has none yet."""
        cache = self.attestor.cache
        pending = [u for u in self.attestor.upstreams if not cache.verdicts(u)]
        await asyncio.gather(*(self.attestor.refresh(u) for u in pending))

    async def start(self) -> None:
        """First verdicts before serving, then background refresh with fresh nonces
        (chutes added later start their loop, attesting at once, as they are added)."""
        await self.attest_pending()
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
    upstreams = [
        UpstreamAttestation(u.name, AttestedTlsAdapter(u.base_url), _policy(config, u))
        for u in attested
        if u.attestation == "attested-tls"
    ]
    attestor = Attestor(verifier, upstreams, collateral_refresh_s=config.collateral_refresh_s)
    return AttestationRuntime(attestor, verifier, ChuteAttestations(attestor, config, attested))


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
