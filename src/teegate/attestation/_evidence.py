"""What an evidence adapter hands the verifier, whichever way it fetched it.

The adapters that fetch over HTTP live in the HTTP edge (`teegate.attestation.http`);
the attestor and the verifier see only these types and the `EvidenceAdapter` interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from teegate.attestation._e2ee import E2eeKeys
from teegate.attestation._gpu import GpuEvidence
from teegate.errors import AttestationFailed

__all__ = [
    "AttestationMode",
    "EvidenceAdapter",
    "EvidenceBatch",
    "InstanceEvidence",
    "ProviderAssertedAdapter",
]

AttestationMode = Literal["attested-tls", "chutes", "provider-asserted"]


@dataclass(frozen=True)
class InstanceEvidence:
    """What one TEE instance presented, and what its quote's report_data must be."""

    instance_id: str | None
    quote: bytes = field(repr=False)
    expected_report_data: bytes = field(repr=False)
    gpu: GpuEvidence | None = None
    tls_spki_sha256: bytes | None = None
    tls_cert_sha256: bytes | None = None
    e2e_pubkey: str | None = None
    e2ee: E2eeKeys | None = None
    """attested-tls with EHBP: the HPKE and usage keys its quote binds with the TLS key."""


@dataclass(frozen=True)
class EvidenceBatch:
    """One fetch: evidence per instance, and instances that failed to give any.

    `rejected` pairs an instance id with why its entry could not be used; such an
    instance gets a failed verdict. `provider_asserted` is set only in that mode.
    """

    instances: tuple[InstanceEvidence, ...] = ()
    rejected: tuple[tuple[str, AttestationFailed], ...] = ()
    provider_asserted: bool | None = None


class EvidenceAdapter(Protocol):
    """Fetches an upstream's evidence for `nonce` (32 fresh bytes)."""

    @property
    def mode(self) -> AttestationMode: ...

    async def fetch(self, nonce: bytes) -> EvidenceBatch: ...

    async def aclose(self) -> None: ...


class ProviderAssertedAdapter:
    """provider-asserted: no hardware evidence, only what the upstream's catalog claims.

    Never a default: it exists for upstreams the operator chose to trust on their
    word, and every verdict it yields is labelled `provider-asserted`.
    """

    def __init__(self, confidential_compute: Callable[[], bool]) -> None:
        self._flag = confidential_compute

    def __repr__(self) -> str:
        return "ProviderAssertedAdapter()"

    @property
    def mode(self) -> AttestationMode:
        return "provider-asserted"

    async def fetch(self, nonce: bytes) -> EvidenceBatch:
        return EvidenceBatch(provider_asserted=self._flag() is True)

    async def aclose(self) -> None:
        return None
