"""Verdicts, and the cache the request path reads them from.

A verdict is what one verification concluded about one upstream instance, with the
evidence behind it (for `GET /v1/attestation/report`) and an expiry. The request path
calls `VerdictCache.require`: a dict lookup and a clock read, no I/O. It returns a
fresh passing verdict or raises `AttestationFailed`: no verdict, a failed one or a
stale one is refused (fail closed).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from teegate.attestation._check import Check
from teegate.attestation._collateral import Collateral
from teegate.attestation._e2ee import E2eeKeys
from teegate.attestation._gpu import GpuDevice
from teegate.errors import AttestationFailed

__all__ = [
    "TRANSIENT_CHECKS",
    "Verdict",
    "VerdictCache",
    "VerdictEvidence",
    "VerdictMode",
]

VerdictMode = Literal["hardware", "simulated", "provider-asserted"]

#: Failures that say nothing about the upstream's TEE, only that evidence could not be
#: had right now: the previous verdict is kept until it goes stale.
TRANSIENT_CHECKS = frozenset(
    {"evidence_unavailable", "collateral_unavailable", "gpu_service_unavailable"}
)


@dataclass(frozen=True)
class VerdictEvidence:
    """Everything a client needs to re-verify a verdict on its own."""

    nonce: bytes
    report_data_rule: str
    quote: bytes | None = field(default=None, repr=False)
    expected_report_data: bytes | None = field(default=None, repr=False)
    collateral: Collateral | None = field(default=None, repr=False)
    gpu_tokens: Any = field(default=None, repr=False)
    tls_spki_sha256: bytes | None = None
    tls_cert_sha256: bytes | None = None
    e2e_pubkey: str | None = None
    e2ee: E2eeKeys | None = None

    def to_report(self) -> dict[str, Any]:
        def hex_or_none(value: bytes | None) -> str | None:
            return value.hex() if value is not None else None

        return {
            "nonce": self.nonce.hex(),
            "report_data_rule": self.report_data_rule,
            "quote": base64.b64encode(self.quote).decode() if self.quote else None,
            "expected_report_data": hex_or_none(self.expected_report_data),
            "tls_spki_sha256": hex_or_none(self.tls_spki_sha256),
            "tls_cert_sha256": hex_or_none(self.tls_cert_sha256),
            "e2e_pubkey": self.e2e_pubkey,
            "hpke_key_config": hex_or_none(self.e2ee.hpke_key_config if self.e2ee else None),
            "usage_key": hex_or_none(self.e2ee.usage_key if self.e2ee else None),
            "collateral": self.collateral.to_report() if self.collateral else None,
            "gpu_tokens": self.gpu_tokens,
        }


@dataclass(frozen=True, eq=False)
class Verdict:
    """The outcome of attesting one upstream (one instance of it, for chutes).

    Compared and hashed by identity: each verdict is one event, with a unique `id`.
    """

    id: str
    upstream: str
    instance_id: str | None
    mode: VerdictMode
    passed: bool
    failed_check: str | None
    reason: str
    verified_at_s: int
    expires_at_s: int
    tcb_status: str | None = None
    advisory_ids: tuple[str, ...] = ()
    measurements: Mapping[str, str] = field(default_factory=dict)
    gpus: tuple[GpuDevice, ...] = ()
    checks: tuple[Check, ...] = field(default=(), repr=False)
    evidence: VerdictEvidence | None = field(default=None, repr=False)

    def fresh(self, now_s: float) -> bool:
        return now_s < self.expires_at_s

    @property
    def transient(self) -> bool:
        """Failed only because evidence could not be fetched: an older verdict may stand."""
        return not self.passed and self.failed_check in TRANSIENT_CHECKS

    @property
    def tls_cert_sha256(self) -> bytes | None:
        """SHA-256 of the certificate whose key the quote bound: the TLS pin."""
        return self.evidence.tls_cert_sha256 if self.evidence else None

    @property
    def tls_spki_sha256(self) -> bytes | None:
        return self.evidence.tls_spki_sha256 if self.evidence else None

    @property
    def e2ee(self) -> E2eeKeys | None:
        """The HPKE and usage keys the quote bound, if the enclave serves EHBP."""
        return self.evidence.e2ee if self.evidence else None

    def header_value(self) -> str:
        """`X-TEE-Attestation`: mode, verdict id, verified_at, TCB status."""
        return (
            f"mode={self.mode}; verdict={self.id}; verified_at={self.verified_at_s}; "
            f"tcb={self.tcb_status or 'n/a'}"
        )

    def summary(self) -> dict[str, Any]:
        """The attestation summary `/v1/models` shows per model."""
        return {
            "status": "passed" if self.passed else "failed",
            "verified_at": self.verified_at_s,
            "expires_at": self.expires_at_s,
            "mode": self.mode,
            "tcb_status": self.tcb_status,
            "verdict_id": self.id,
        }

    def to_report(self) -> dict[str, Any]:
        """The whole verdict with its evidence, for `GET /v1/attestation/report`."""
        return {
            "id": self.id,
            "upstream": self.upstream,
            "instance_id": self.instance_id,
            "mode": self.mode,
            "passed": self.passed,
            "failed_check": self.failed_check,
            "reason": self.reason,
            "verified_at": self.verified_at_s,
            "expires_at": self.expires_at_s,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "measurements": dict(self.measurements),
            "gpus": [asdict(g) for g in self.gpus],
            "checks": [c.to_dict() for c in self.checks],
            "evidence": self.evidence.to_report() if self.evidence else None,
        }


@dataclass(frozen=True)
class _Entry:
    verdicts: tuple[Verdict, ...]
    best: Verdict | None  # the passing verdict that expires last: the fast path
    last_failure: AttestationFailed | None = None


class VerdictCache:
    """Current verdicts per upstream. Reads do no I/O; writes come from the `Attestor`."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._watchers: list[Callable[[Verdict], None]] = []

    def watch(self, accepted: Callable[[Verdict], None]) -> None:
        """Call `accepted` with every passing verdict the cache takes from now on, and
        at once with those it holds: the transparency log records each verdict a
        request may rely on. It must not raise, nor wait."""
        self._watchers.append(accepted)
        for entry in self._entries.values():
            for verdict in entry.verdicts:
                if verdict.passed:
                    accepted(verdict)

    def __repr__(self) -> str:
        return f"VerdictCache(upstreams={sorted(self._entries)})"

    def replace(self, upstream: str, verdicts: Sequence[Verdict]) -> None:
        """Make `verdicts` the upstream's current set (instances not in it are forgotten)."""
        passing = [v for v in verdicts if v.passed]
        best = max(passing, key=lambda v: v.expires_at_s) if passing else None
        self._entries[upstream] = _Entry(tuple(verdicts), best)
        for watcher in self._watchers:
            for verdict in passing:
                watcher(verdict)

    def forget(self, upstream: str) -> None:
        """Drop everything about the upstream (it is no longer attested at all)."""
        self._entries.pop(upstream, None)

    def note_failure(self, upstream: str, failure: AttestationFailed) -> None:
        """Remember why a refresh could not run; the current verdicts stay until stale."""
        entry = self._entries.get(upstream, _Entry((), None))
        self._entries[upstream] = _Entry(entry.verdicts, entry.best, failure)

    def last_failure(self, upstream: str) -> AttestationFailed | None:
        """Why the latest refresh could not run, if it could not."""
        entry = self._entries.get(upstream)
        return entry.last_failure if entry else None

    def verdicts(self, upstream: str) -> tuple[Verdict, ...]:
        """All current verdicts, passing or not, fresh or not (for reports)."""
        entry = self._entries.get(upstream)
        return entry.verdicts if entry else ()

    def passing(self, upstream: str) -> tuple[Verdict, ...]:
        """Fresh passing verdicts: the instances a request may go to."""
        now = self._clock()
        return tuple(v for v in self.verdicts(upstream) if v.passed and v.fresh(now))

    def require(self, upstream: str, instance_id: str | None = None) -> Verdict:
        """A fresh passing verdict for the upstream (or that instance), else `AttestationFailed`."""
        entry = self._entries.get(upstream)
        now = self._clock()
        best = entry.best if entry else None
        if (
            best is not None
            and best.fresh(now)
            and (instance_id is None or best.instance_id == instance_id)
        ):
            return best
        return self._refusal_or_other(upstream, instance_id, entry, now)

    def _refusal_or_other(
        self, upstream: str, instance_id: str | None, entry: _Entry | None, now: float
    ) -> Verdict:
        """The slow path: another passing instance, or the reason to refuse."""
        candidates = [
            v
            for v in (entry.verdicts if entry else ())
            if instance_id is None or v.instance_id == instance_id
        ]
        if not candidates:
            why = entry.last_failure.reason if entry and entry.last_failure else "not attested yet"
            raise AttestationFailed("missing", f"no attestation verdict for {upstream}: {why}")
        fresh = [v for v in candidates if v.fresh(now)]
        for verdict in fresh:
            if verdict.passed:
                return verdict
        if fresh:
            failed = fresh[0]
            raise AttestationFailed(failed.failed_check or "failed", failed.reason)
        raise AttestationFailed("stale", _stale_reason(upstream, candidates, entry))


def _stale_reason(upstream: str, verdicts: Sequence[Verdict], entry: _Entry | None) -> str:
    expired = max(v.expires_at_s for v in verdicts)
    reason = f"attestation of {upstream} expired at {expired}"
    if entry is not None and entry.last_failure is not None:
        reason += f"; last refresh failed: {entry.last_failure}"
    return reason
