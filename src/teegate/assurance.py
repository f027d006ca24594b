"""Attestation status per upstream, as the gate reads it on every request.

Upstreams configured `provider-asserted` pass on the catalog flag alone and are
labelled so. Hardware modes pass only on a fresh verdict: until the verifier
has produced one, they fail closed.
"""

from __future__ import annotations

from collections.abc import Iterable

from teegate.catalog import AttestationStatus
from teegate.config import UpstreamSettings

PROVIDER_ASSERTED = AttestationStatus(
    passed=True,
    mode="provider-asserted",
    header="mode=provider-asserted; verdict=none; tcb=unverified",
)


class UpstreamAssurance:
    def __init__(self, upstreams: Iterable[UpstreamSettings]) -> None:
        self._modes = {u.name: u.attestation for u in upstreams}

    def status(self, upstream: str) -> AttestationStatus:
        mode = self._modes.get(upstream)
        if mode == "provider-asserted":
            return PROVIDER_ASSERTED
        return AttestationStatus(
            passed=False,
            mode=mode or "unknown",
            reason=f"upstream '{upstream}' has no hardware attestation verdict",
        )
