"""Attestation: is this upstream really a TEE, and is it the one we talk to?

Wiring, in short::

    verifier = EvidenceVerifier(PccsCollateralProvider(pccs_url),        # Intel root
                                gpu_service=NvidiaRemoteAttestationService())
    attestor = Attestor(verifier, [UpstreamAttestation("up", AttestedTlsAdapter(url))])
    attestor.start()                       # background refresh, fresh nonces
    verdict = attestor.cache.require("up") # request path: no I/O, raises AttestationFailed
    ssl = aiohttp.Fingerprint(verdict.tls_cert_sha256)   # pin the attested TLS key
    ...
    await attestor.aclose(); await verifier.aclose()

Every verification failure is `teegate.errors.AttestationFailed(check, reason)`;
dependency errors are mapped to it here and never escape (fail closed).
"""

from __future__ import annotations

from teegate.attestation._adapters import (
    AttestationMode,
    AttestedTlsAdapter,
    ChutesAdapter,
    EvidenceAdapter,
    EvidenceBatch,
    InstanceEvidence,
    ProviderAssertedAdapter,
)
from teegate.attestation._attestor import Attestor, UpstreamAttestation
from teegate.attestation._binding import (
    NONCE_BYTES,
    attested_tls_report_data,
    certificate_der,
    chutes_report_data,
    report_data_matches,
    spki_sha256,
)
from teegate.attestation._check import FAIL_CLOSED, Check, CheckLog
from teegate.attestation._collateral import (
    Collateral,
    CollateralProvider,
    PccsCollateralProvider,
    StaticCollateralProvider,
)
from teegate.attestation._gpu import (
    NRAS_ISSUER,
    GpuDevice,
    GpuEvidence,
    GpuVerification,
    parse_jwks,
    verify_gpu_tokens,
)
from teegate.attestation._http import UNAVAILABLE_ON, EvidenceHttpClient, HttpJson
from teegate.attestation._nras import (
    NRAS_GPU_ATTEST_URL,
    NRAS_JWKS_URL,
    GpuAttestationService,
    NvidiaRemoteAttestationService,
)
from teegate.attestation._policy import (
    DEFAULT_ALLOWED_TCB_STATUSES,
    KNOWN_TCB_STATUSES,
    AttestationPolicy,
    MeasurementAllowList,
)
from teegate.attestation._quote import TDX_TEE_TYPE, TdQuote, parse_td_quote
from teegate.attestation._tdx import TdxVerification, TrustRoot, verify_tdx_quote
from teegate.attestation._verdict import (
    TRANSIENT_CHECKS,
    Verdict,
    VerdictCache,
    VerdictEvidence,
    VerdictMode,
)
from teegate.attestation._verifier import EvidenceVerifier, VerifiedInstance

__all__ = [
    "DEFAULT_ALLOWED_TCB_STATUSES",
    "FAIL_CLOSED",
    "KNOWN_TCB_STATUSES",
    "NONCE_BYTES",
    "NRAS_GPU_ATTEST_URL",
    "NRAS_ISSUER",
    "NRAS_JWKS_URL",
    "TDX_TEE_TYPE",
    "TRANSIENT_CHECKS",
    "UNAVAILABLE_ON",
    "AttestationMode",
    "AttestationPolicy",
    "AttestedTlsAdapter",
    "Attestor",
    "Check",
    "CheckLog",
    "ChutesAdapter",
    "Collateral",
    "CollateralProvider",
    "EvidenceAdapter",
    "EvidenceBatch",
    "EvidenceHttpClient",
    "EvidenceVerifier",
    "GpuAttestationService",
    "GpuDevice",
    "GpuEvidence",
    "GpuVerification",
    "HttpJson",
    "InstanceEvidence",
    "MeasurementAllowList",
    "NvidiaRemoteAttestationService",
    "PccsCollateralProvider",
    "ProviderAssertedAdapter",
    "StaticCollateralProvider",
    "TdQuote",
    "TdxVerification",
    "TrustRoot",
    "UpstreamAttestation",
    "Verdict",
    "VerdictCache",
    "VerdictEvidence",
    "VerdictMode",
    "VerifiedInstance",
    "attested_tls_report_data",
    "certificate_der",
    "chutes_report_data",
    "parse_jwks",
    "parse_td_quote",
    "report_data_matches",
    "spki_sha256",
    "verify_gpu_tokens",
    "verify_tdx_quote",
]
