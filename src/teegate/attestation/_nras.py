"""Where GPU tokens and their signing keys come from: NVIDIA's remote attestation service.

Production points `NvidiaRemoteAttestationService` at NRAS (the endpoints are
settings, defaulting to NVIDIA's: see `teegate.config`); the dev stack and tests
point it at a local server backed by `teegate.devstack.tdx_pki.LocalGpuAttestationService`,
so the same client code runs in both. Keys are cached and refetched when a token
names an unknown `kid` (key rotation), at most once per `min_refetch_interval_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from teegate.attestation._gpu import GpuEvidence, parse_jwks
from teegate.attestation._http import EvidenceHttpClient

__all__ = ["NvidiaRemoteAttestationService"]


class NvidiaRemoteAttestationService:
    """NRAS v3 over HTTP: `POST /v3/attest/gpu`, keys from `/.well-known/jwks.json`."""

    def __init__(
        self,
        http: EvidenceHttpClient | None = None,
        *,
        attest_url: str,
        jwks_url: str,
        issuer: str,
        keys_ttl_s: float = 3600.0,
        min_refetch_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http or EvidenceHttpClient(unavailable_check="gpu_service_unavailable")
        self._attest_url = attest_url
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._keys_ttl_s = keys_ttl_s
        self._min_refetch_s = min_refetch_interval_s
        self._clock = clock
        self._keys: Mapping[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None

    def __repr__(self) -> str:
        return f"NvidiaRemoteAttestationService({self._attest_url!r})"

    @property
    def issuer(self) -> str:
        return self._issuer

    async def attest(self, evidence: GpuEvidence, nonce: bytes) -> Any:
        payload = {
            "nonce": nonce.hex(),
            "arch": evidence.arch,
            "evidence_list": [dict(item) for item in evidence.evidence_list],
        }
        return (await self._http.post_json(self._attest_url, payload)).body

    async def signing_keys(self, *, refresh: bool = False) -> Mapping[str, jwt.PyJWK]:
        now = self._clock()
        age = None if self._fetched_at is None else now - self._fetched_at
        if age is None or age >= self._keys_ttl_s or (refresh and age >= self._min_refetch_s):
            document = (await self._http.get_json(self._jwks_url)).body
            self._keys = parse_jwks(document)
            self._fetched_at = now
        return self._keys

    async def aclose(self) -> None:
        await self._http.aclose()
