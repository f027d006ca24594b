"""What a quote's report_data must contain, per attestation mode, and how it is compared.

report_data is the only link between a hardware quote and the channel teegate talks
over: a quote whose report_data does not bind this nonce (freshness) and this key
(the TLS key, or the instance's certificate and e2e key) proves nothing about it.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teegate.errors import AttestationFailed

__all__ = [
    "NONCE_BYTES",
    "attested_tls_report_data",
    "certificate_der",
    "chutes_report_data",
    "report_data_matches",
    "spki_sha256",
]

NONCE_BYTES = 32


def certificate_der(certificate: bytes) -> bytes:
    """DER of a certificate given as PEM or DER; a bad certificate fails closed."""
    try:
        if certificate.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(certificate)
        else:
            cert = x509.load_der_x509_certificate(certificate)
        return cert.public_bytes(serialization.Encoding.DER)
    except ValueError as exc:
        raise AttestationFailed("certificate", "not a valid X.509 certificate") from exc


def spki_sha256(certificate: bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (DER): the key, not the cert."""
    cert = x509.load_der_x509_certificate(certificate_der(certificate))
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def attested_tls_report_data(tls_spki_sha256: bytes, nonce: bytes) -> bytes:
    """attested-tls: SHA-256(upstream TLS SPKI DER) ‖ nonce."""
    _require_sizes(tls_spki_sha256, nonce)
    return tls_spki_sha256 + nonce


def chutes_report_data(nonce: bytes, e2e_pubkey_b64: str, certificate: bytes) -> bytes:
    """chutes: SHA-256(nonce_hex + e2e public key base64, UTF-8) ‖ SHA-256(cert SPKI DER)."""
    _require_sizes(b"\0" * 32, nonce)
    first = hashlib.sha256((nonce.hex() + e2e_pubkey_b64).encode("utf-8")).digest()
    return first + spki_sha256(certificate)


def report_data_matches(actual: bytes, expected: bytes) -> bool:
    """Constant-time comparison, so a forger learns nothing from how fast it failed."""
    return hmac.compare_digest(actual, expected)


def _require_sizes(digest: bytes, nonce: bytes) -> None:
    if len(digest) != 32 or len(nonce) != NONCE_BYTES:
        raise ValueError("report_data parts must be 32 bytes each")
