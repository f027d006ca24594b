"""Attestation's HTTP edge: evidence, GPU tokens and their signing keys fetched over aiohttp.

A module of its own, imported by whoever wires real upstreams (`teegate.assurance`),
so that `import teegate.attestation` (verification, verdicts, the attestor) loads
no HTTP client.
"""

from teegate.attestation._adapters import AttestedTlsAdapter, ChutesAdapter
from teegate.attestation._http import UNAVAILABLE_ON, EvidenceHttpClient, HttpJson
from teegate.attestation._nras import NvidiaRemoteAttestationService

__all__ = [
    "UNAVAILABLE_ON",
    "AttestedTlsAdapter",
    "ChutesAdapter",
    "EvidenceHttpClient",
    "HttpJson",
    "NvidiaRemoteAttestationService",
]
