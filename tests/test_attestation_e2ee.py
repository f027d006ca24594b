"""The E2EE keys' binding in report_data and the enclave's signed usage record."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teegate.attestation import (
    E2eeKeys,
    UsageRecord,
    attested_tls_report_data,
    e2ee_report_data,
    hpke_public_key,
    read_signed_usage,
)

SIGNER = Ed25519PrivateKey.generate()
USAGE_KEY = SIGNER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
CONFIG = bytes.fromhex("000020") + b"\x11" * 32 + bytes.fromhex("000400010002")
ENC = "ab" * 32
RECORD = UsageRecord("req_1", ENC, "org/Model-TEE", 12, 34)


def read(value: str | None, **overrides: str) -> UsageRecord | None:
    expected = {"request_id": "req_1", "encapsulated_key": ENC, "model": "org/Model-TEE"}
    return read_signed_usage(value, USAGE_KEY, **(expected | overrides))


def test_the_e2ee_layout_binds_every_key_and_keeps_the_nonce_last() -> None:
    spki, nonce = secrets.token_bytes(32), secrets.token_bytes(32)
    keys = E2eeKeys(CONFIG, USAGE_KEY)
    data = e2ee_report_data(spki, keys, nonce)
    expected = hashlib.sha256(
        b"teegate-e2ee-v1\x00"
        + spki
        + hashlib.sha256(CONFIG).digest()
        + hashlib.sha256(USAGE_KEY).digest()
    ).digest()
    assert data == expected + nonce
    assert data != attested_tls_report_data(spki, nonce)
    other_hpke = E2eeKeys(CONFIG[:3] + b"\x22" * 32 + CONFIG[35:], USAGE_KEY)
    other_usage = E2eeKeys(CONFIG, b"\x00" * 32)
    assert e2ee_report_data(spki, other_hpke, nonce) != data
    assert e2ee_report_data(spki, other_usage, nonce) != data


@pytest.mark.parametrize(
    "config",
    [
        CONFIG[:-1],
        bytes.fromhex("000010") + CONFIG[3:],  # another KEM
        CONFIG[:-2] + bytes.fromhex("0003"),  # ChaCha20-Poly1305: not EHBP's suite
    ],
)
def test_a_key_config_other_than_ehbps_suite_is_refused(config: bytes) -> None:
    with pytest.raises(ValueError):
        hpke_public_key(config)


def test_the_public_key_is_read_from_the_config() -> None:
    assert hpke_public_key(CONFIG) == b"\x11" * 32


def test_a_record_signed_for_this_request_is_read() -> None:
    assert read(RECORD.signed(SIGNER)) == RECORD


@pytest.mark.parametrize(
    "overrides",
    [{"request_id": "req_2"}, {"encapsulated_key": "cd" * 32}, {"model": "org/Cheaper-TEE"}],
)
def test_a_record_for_another_request_is_refused(overrides: dict[str, str]) -> None:
    assert read(RECORD.signed(SIGNER), **overrides) is None


def test_a_forged_missing_or_malformed_record_is_refused() -> None:
    assert read(RECORD.signed(Ed25519PrivateKey.generate())) is None
    assert read(None) is None
    assert read("no-dot") is None
    assert read("!!!.???") is None
    record, signature = RECORD.signed(SIGNER).split(".")
    assert read(f"{record[:-2]}AA.{signature}") is None
    negative = UsageRecord("req_1", ENC, "org/Model-TEE", -1, 34)
    assert read(negative.signed(SIGNER)) is None
