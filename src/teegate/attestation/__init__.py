"""Attestation: is this upstream really a TEE, and is it the one we talk to?

Wiring, in short (the HTTP edge, `teegate.attestation.http`, is imported on its own,
so that importing this package loads no HTTP client)::

    from teegate.attestation.http import AttestedTlsAdapter, NvidiaRemoteAttestationService
    verifier = EvidenceVerifier(PccsCollateralProvider(pccs_url),        # Intel root
                                gpu_service=NvidiaRemoteAttestationService(...))
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
from teegate.attestation._e2ee import (
    HPKE_KEY_CONFIG_BYTES,
    E2eeKeys,
    UsageRecord,
    e2ee_report_data,
    hpke_public_key,
    read_signed_usage,
)
from teegate.attestation._evidence import (
    AttestationMode,
    EvidenceAdapter,
    EvidenceBatch,
    InstanceEvidence,
    ProviderAssertedAdapter,
)
from teegate.attestation._gpu import (
    GpuAttestationService,
    GpuDevice,
    GpuEvidence,
    GpuVerification,
    parse_jwks,
    verify_gpu_tokens,
)
from teegate.attestation._policy import (
    DEFAULT_ALLOWED_TCB_STATUSES,
    KNOWN_TCB_STATUSES,
    AttestationPolicy,
    MeasurementAllowList,
)
from teegate.attestation._quote import TDX_TEE_TYPE, TdQuote, parse_td_quote
from teegate.attestation._tdx import TdxVerification, TrustRoot, verify_tdx_quote
from teegate.attestation._tsm import (
    REPORT_DATA_RULE,
    ConfigfsTsm,
    TsmReport,
    gateway_report_data,
)
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
    "HPKE_KEY_CONFIG_BYTES",
    "KNOWN_TCB_STATUSES",
    "NONCE_BYTES",
    "REPORT_DATA_RULE",
    "TDX_TEE_TYPE",
    "TRANSIENT_CHECKS",
    "AttestationMode",
    "AttestationPolicy",
    "Attestor",
    "Check",
    "CheckLog",
    "Collateral",
    "CollateralProvider",
    "ConfigfsTsm",
    "E2eeKeys",
    "EvidenceAdapter",
    "EvidenceBatch",
    "EvidenceVerifier",
    "GpuAttestationService",
    "GpuDevice",
    "GpuEvidence",
    "GpuVerification",
    "InstanceEvidence",
    "MeasurementAllowList",
    "PccsCollateralProvider",
    "ProviderAssertedAdapter",
    "StaticCollateralProvider",
    "TdQuote",
    "TdxVerification",
    "TrustRoot",
    "TsmReport",
    "UpstreamAttestation",
    "UsageRecord",
    "Verdict",
    "VerdictCache",
    "VerdictEvidence",
    "VerdictMode",
    "VerifiedInstance",
    "attested_tls_report_data",
    "certificate_der",
    "chutes_report_data",
    "e2ee_report_data",
    "gateway_report_data",
    "hpke_public_key",
    "parse_jwks",
    "parse_td_quote",
    "read_signed_usage",
    "report_data_matches",
    "spki_sha256",
    "verify_gpu_tokens",
    "verify_tdx_quote",
]
