"""The background refresher: attests every configured upstream and keeps verdicts fresh.

Each upstream gets its own loop: fetch evidence with a fresh 32-byte nonce, verify,
store the verdicts, sleep until `refresh_margin_s` before the earliest expiry. When
evidence cannot be fetched (a transient check), the old verdicts stay until they go
stale, and the loop retries every `retry_interval_s`; once stale, the cache refuses.
The request path never waits on any of this: it only reads the `VerdictCache`.

One more loop refreshes the collateral every `collateral_refresh_s` and then
re-attests every upstream at once, so a TCB status Intel changes (OutOfDate,
Revoked), a PCK put on a CRL, or collateral past its date is refused within about
`collateral_refresh_s` plus one collateral fetch and one attestation round, not at
the cached collateral's nextUpdate (docs/attestation.md has the bound). Refreshes
of one upstream run one at a time, so a round that started on the old collateral
cannot overwrite the verdict of one that ran on the new.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from teegate.attestation._binding import NONCE_BYTES
from teegate.attestation._check import Check, CheckLog, summarize
from teegate.attestation._evidence import EvidenceAdapter, EvidenceBatch, InstanceEvidence
from teegate.attestation._policy import AttestationPolicy
from teegate.attestation._verdict import Verdict, VerdictCache, VerdictEvidence, VerdictMode
from teegate.attestation._verifier import EvidenceVerifier, VerifiedInstance
from teegate.errors import AttestationFailed, ConfigError

__all__ = ["Attestor", "UpstreamAttestation"]

_log = structlog.get_logger(__name__)
_MIN_SLEEP_S = 1.0

_REPORT_DATA_RULES = {
    "attested-tls": "sha256(tls_spki_der) || nonce",
    "attested-tls+e2ee": (
        "sha256('teegate-e2ee-v1\\0' || sha256(tls_spki_der) || sha256(hpke_key_config)"
        " || sha256(usage_key)) || nonce"
    ),
    "chutes": "sha256(utf8(nonce_hex + e2e_pubkey_b64)) || sha256(certificate_spki_der)",
}


@dataclass(frozen=True)
class UpstreamAttestation:
    """How one upstream is attested: its evidence adapter and its acceptance policy."""

    upstream: str
    adapter: EvidenceAdapter
    policy: AttestationPolicy = field(default_factory=AttestationPolicy)


class Attestor:
    """Keeps a `VerdictCache` filled with fresh verdicts for the configured upstreams."""

    def __init__(
        self,
        verifier: EvidenceVerifier,
        upstreams: Sequence[UpstreamAttestation],
        *,
        cache: VerdictCache | None = None,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = lambda: secrets.token_bytes(NONCE_BYTES),
        collateral_refresh_s: float | None = None,
    ) -> None:
        self._verifier = verifier
        self._upstreams = {u.upstream: u for u in upstreams}
        if len(self._upstreams) != len(upstreams):
            raise ConfigError("attestation: an upstream is configured twice")
        for u in upstreams:
            self._check_gpu_service(u)
        self.cache = cache or VerdictCache(clock=clock)
        self._clock = clock
        self._nonce_factory = nonce_factory
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._collateral_refresh_s = collateral_refresh_s
        self._collateral_task: asyncio.Task[None] | None = None
        self._refresh_locks: dict[str, asyncio.Lock] = {}

    def _check_gpu_service(self, u: UpstreamAttestation) -> None:
        needs_gpu = u.policy.require_gpu and u.adapter.mode != "provider-asserted"
        if needs_gpu and not self._verifier.has_gpu_service:
            raise ConfigError(f"{u.upstream}: require_gpu needs a GPU attestation service")

    def __repr__(self) -> str:
        return f"Attestor(upstreams={sorted(self._upstreams)}, running={bool(self._tasks)})"

    @property
    def upstreams(self) -> tuple[str, ...]:
        return tuple(self._upstreams)

    # ---- attestations added and removed while running (one per chute, as listed) ----

    def add(self, attestation: UpstreamAttestation) -> None:
        """Attest one more upstream from now on. If the attestor is running, its loop
        starts at once (attesting right away); until its first verdict the cache refuses it."""
        if attestation.upstream in self._upstreams:
            raise ConfigError(f"attestation: {attestation.upstream} is already attested")
        self._check_gpu_service(attestation)
        self._upstreams[attestation.upstream] = attestation
        if self._running:
            self._start_loop(attestation.upstream)

    async def remove(self, upstream: str) -> None:
        """Stop attesting `upstream`: its loop ends, its adapter closes, its verdicts go."""
        config = self._upstreams.pop(upstream, None)
        task = self._tasks.pop(upstream, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.cache.forget(upstream)
        self._refresh_locks.pop(upstream, None)
        if config is not None:
            await config.adapter.aclose()

    # ---- one round ----

    async def refresh(self, upstream: str) -> tuple[Verdict, ...]:
        """Attest now with a fresh nonce and store the result (keeping old verdicts on
        transient failures); returns the verdicts as now stored."""
        lock = self._refresh_locks.setdefault(upstream, asyncio.Lock())
        async with lock:
            return await self._refresh(upstream)

    async def _refresh(self, upstream: str) -> tuple[Verdict, ...]:
        new = await self.attest(upstream, nonce=self._fresh_nonce())
        old = self.cache.verdicts(upstream)
        if all(v.transient for v in new) and old:
            failure = AttestationFailed(new[0].failed_check or "failed", new[0].reason)
            self.cache.note_failure(upstream, failure)
            _log.warning("attestation.refresh_unavailable", upstream=upstream, check=failure.check)
            return old
        merged = _keep_old_on_transient(old, new)
        self.cache.replace(upstream, merged)
        _log.info(
            "attestation.refreshed",
            upstream=upstream,
            passed=sum(v.passed for v in merged),
            failed=sum(not v.passed for v in merged),
        )
        return merged

    async def attest(self, upstream: str, *, nonce: bytes) -> tuple[Verdict, ...]:
        """Attest with `nonce` and return verdicts without storing them.

        For `teegate attest` and for a client's own nonce on the report endpoint: a
        nonce teegate did not draw proves nothing to teegate, so it never feeds the cache.
        """
        if len(nonce) != NONCE_BYTES:
            raise ValueError("nonce must be 32 bytes")
        config = self._upstreams[upstream]
        asserted = config.adapter.mode == "provider-asserted"
        mode: VerdictMode = "provider-asserted" if asserted else self._verifier.mode
        round_ = _Round(config, nonce, int(self._clock()), mode)
        try:
            batch = await config.adapter.fetch(nonce)
        except AttestationFailed as failure:
            return (round_.failed(None, failure),)
        except Exception as exc:  # an adapter bug on odd evidence: refuse now, not at TTL
            internal = AttestationFailed("internal", f"evidence adapter error: {summarize(exc)}")
            return (round_.failed(None, internal),)
        if batch.provider_asserted is not None:
            return (round_.provider_asserted(batch.provider_asserted),)
        return await self._verify_batch(round_, batch)

    async def _verify_batch(self, round_: _Round, batch: EvidenceBatch) -> tuple[Verdict, ...]:
        verdicts = [round_.failed(instance_id, failure) for instance_id, failure in batch.rejected]
        verdicts += await asyncio.gather(*(self._verify_one(round_, ev) for ev in batch.instances))
        if not verdicts:
            failure = AttestationFailed("evidence_format", "the upstream returned no evidence")
            verdicts.append(round_.failed(None, failure))
        return tuple(verdicts)

    async def _verify_one(self, round_: _Round, evidence: InstanceEvidence) -> Verdict:
        log = CheckLog()
        try:
            result = await self._verifier.verify(
                evidence, nonce=round_.nonce, policy=round_.config.policy, log=log
            )
        except AttestationFailed as failure:
            return round_.failed(evidence.instance_id, failure, log.checks, evidence)
        return round_.passed(evidence, result, log.checks)

    # ---- background loop ----

    def start(self) -> None:
        """Start one refresh loop per upstream (idempotent). Call from a running loop."""
        self._running = True
        for upstream in self._upstreams:
            self._start_loop(upstream)
        if self._collateral_refresh_s is not None and self._collateral_task is None:
            self._collateral_task = asyncio.create_task(
                self._refresh_collateral_forever(self._collateral_refresh_s),
                name="attest:collateral",
            )

    def _start_loop(self, upstream: str) -> None:
        if upstream not in self._tasks or self._tasks[upstream].done():
            self._tasks[upstream] = asyncio.create_task(
                self._run(upstream), name=f"attest:{upstream}"
            )

    async def aclose(self) -> None:
        """Stop the loops and close the adapters' HTTP sessions."""
        self._running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        if self._collateral_task is not None:
            tasks.append(self._collateral_task)
            self._collateral_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for config in self._upstreams.values():
            await config.adapter.aclose()

    async def _run(self, upstream: str) -> None:
        if self.cache.verdicts(upstream):  # already attested (at start-up): wait until due
            await asyncio.sleep(self.next_refresh_in_s(upstream))
        while True:
            try:
                await self.refresh(upstream)
            except Exception:  # a bug must not end the loop: verdicts go stale, refused
                _log.exception("attestation.refresh_crashed", upstream=upstream)
            await asyncio.sleep(self.next_refresh_in_s(upstream))

    async def refresh_collateral(self) -> None:
        """Fetch the collateral again, then re-attest every upstream with it: each
        verdict is decided again on what Intel publishes now."""
        await self._verifier.refresh_collateral()
        upstreams = list(self._upstreams)
        results = await asyncio.gather(
            *(self.refresh(u) for u in upstreams), return_exceptions=True
        )
        for upstream, result in zip(upstreams, results, strict=True):
            # removed meanwhile (KeyError), or a bug: its own loop and TTL still hold
            if isinstance(result, BaseException) and upstream in self._upstreams:
                _log.error("attestation.reattest_failed", upstream=upstream, error=repr(result))

    async def _refresh_collateral_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh_collateral()
            except Exception:  # a bug must not end the loop; the verdicts' TTL still holds
                _log.exception("attestation.collateral_refresh_crashed")

    def next_refresh_in_s(self, upstream: str) -> float:
        """Seconds to the next refresh: `refresh_margin_s` before the earliest passing
        verdict expires, or sooner (`retry_interval_s`) while anything is failing."""
        policy = self._upstreams[upstream].policy
        now = self._clock()
        verdicts = self.cache.verdicts(upstream)
        passing = [float(v.expires_at_s - policy.refresh_margin_s) for v in verdicts if v.passed]
        healthy = bool(verdicts) and len(passing) == len(verdicts)
        if self.cache.last_failure(upstream) is not None or not healthy:
            passing.append(now + policy.retry_interval_s)
        return max(_MIN_SLEEP_S, min(passing) - now)

    def _fresh_nonce(self) -> bytes:
        nonce = self._nonce_factory()
        if len(nonce) != NONCE_BYTES:
            raise ValueError("nonce factory must return 32 bytes")
        return nonce


@dataclass(frozen=True)
class _Round:
    """One attestation round of one upstream: builds its verdicts."""

    config: UpstreamAttestation
    nonce: bytes
    verified_at: int
    mode: VerdictMode

    def passed(
        self, evidence: InstanceEvidence, result: VerifiedInstance, checks: tuple[Check, ...]
    ) -> Verdict:
        """A passing verdict; it expires with the TTL, the collateral or a GPU token."""
        expiries = [self.verified_at + self.config.policy.verdict_ttl_s]
        expiries.append(result.collateral.next_update_s)
        if result.gpu is not None:
            expiries.append(result.gpu.expires_at_s)
        return Verdict(
            id=_verdict_id(),
            upstream=self.config.upstream,
            instance_id=evidence.instance_id,
            mode=self.mode,
            passed=True,
            failed_check=None,
            reason="all checks passed",
            verified_at_s=self.verified_at,
            expires_at_s=min(expiries),
            tcb_status=result.tdx.tcb_status,
            advisory_ids=result.tdx.advisory_ids,
            measurements=result.tdx.quote.measurements(),
            gpus=result.gpu.devices if result.gpu else (),
            checks=checks,
            evidence=self._evidence(evidence, result),
        )

    def failed(
        self,
        instance_id: str | None,
        failure: AttestationFailed,
        checks: tuple[Check, ...] = (),
        evidence: InstanceEvidence | None = None,
    ) -> Verdict:
        return Verdict(
            id=_verdict_id(),
            upstream=self.config.upstream,
            instance_id=instance_id,
            mode=self.mode,
            passed=False,
            failed_check=failure.check,
            reason=failure.reason,
            verified_at_s=self.verified_at,
            expires_at_s=self.verified_at + self.config.policy.verdict_ttl_s,
            checks=checks or (Check(failure.check, False, failure.reason),),
            evidence=self._evidence(evidence, None) if evidence else None,
        )

    def provider_asserted(self, asserted: bool) -> Verdict:
        detail = f"upstream catalog says confidential_compute={str(asserted).lower()}; "
        detail += "no hardware evidence was verified"
        return Verdict(
            id=_verdict_id(),
            upstream=self.config.upstream,
            instance_id=None,
            mode="provider-asserted",
            passed=asserted,
            failed_check=None if asserted else "provider_asserted",
            reason=detail,
            verified_at_s=self.verified_at,
            expires_at_s=self.verified_at + self.config.policy.verdict_ttl_s,
            checks=(Check("provider_asserted", asserted, detail),),
        )

    def _evidence(
        self, evidence: InstanceEvidence, result: VerifiedInstance | None
    ) -> VerdictEvidence:
        return VerdictEvidence(
            nonce=self.nonce,
            report_data_rule=_REPORT_DATA_RULES.get(
                self.config.adapter.mode + ("+e2ee" if evidence.e2ee else ""), ""
            ),
            quote=evidence.quote,
            expected_report_data=evidence.expected_report_data,
            collateral=result.collateral if result else None,
            gpu_tokens=result.gpu.tokens if result and result.gpu else None,
            tls_spki_sha256=evidence.tls_spki_sha256,
            tls_cert_sha256=evidence.tls_cert_sha256,
            e2e_pubkey=evidence.e2e_pubkey,
            e2ee=evidence.e2ee,
        )


def _keep_old_on_transient(
    old: tuple[Verdict, ...], new: tuple[Verdict, ...]
) -> tuple[Verdict, ...]:
    """Per instance: a transient failure does not displace that instance's old verdict."""
    old_by_instance = {v.instance_id: v for v in old}
    return tuple(old_by_instance.get(v.instance_id, v) if v.transient else v for v in new)


def _verdict_id() -> str:
    return "att_" + secrets.token_hex(12)
