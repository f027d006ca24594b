"""report_data binding rules per mode, and the constant-time comparison."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teegate.attestation import (
    attested_tls_report_data,
    chutes_report_data,
    report_data_matches,
    spki_sha256,
)
from teegate.devstack.tdx_pki import self_signed_tls_certificate
from teegate.errors import AttestationFailed


@pytest.fixture(scope="module")
def cert_pem() -> bytes:
    return self_signed_tls_certificate()[0]


def _spki_digest(cert_pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def test_spki_hash_is_of_the_key_and_format_independent(cert_pem: bytes) -> None:
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    assert spki_sha256(cert_pem) == spki_sha256(der) == _spki_digest(cert_pem)
    assert spki_sha256(cert_pem) != hashlib.sha256(der).digest()  # not the certificate hash


def test_attested_tls_report_data_is_spki_hash_then_nonce(cert_pem: bytes) -> None:
    nonce = bytes(range(32))
    assert attested_tls_report_data(spki_sha256(cert_pem), nonce) == _spki_digest(cert_pem) + nonce


def test_chutes_report_data_follows_chutes_rule(cert_pem: bytes) -> None:
    nonce = bytes(range(32))
    pubkey = base64.b64encode(b"e2e-public-key").decode()
    expected = hashlib.sha256((nonce.hex() + pubkey).encode()).digest() + _spki_digest(cert_pem)
    assert chutes_report_data(nonce, pubkey, cert_pem) == expected


def test_wrong_sizes_are_programming_errors(cert_pem: bytes) -> None:
    with pytest.raises(ValueError):
        attested_tls_report_data(b"\0" * 31, b"\0" * 32)
    with pytest.raises(ValueError):
        chutes_report_data(b"\0" * 16, "k", cert_pem)


def test_not_a_certificate_fails_closed() -> None:
    with pytest.raises(AttestationFailed) as info:
        spki_sha256(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert info.value.check == "certificate"
    with pytest.raises(AttestationFailed):
        spki_sha256(b"\x30\x03\x02\x01\x00")


def test_report_data_comparison() -> None:
    assert report_data_matches(b"\1" * 64, b"\1" * 64)
    assert not report_data_matches(b"\1" * 64, b"\1" * 63 + b"\2")
    assert not report_data_matches(b"\1" * 64, b"\1" * 32)
