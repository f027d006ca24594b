"""The two keys an enclave adds for end-to-end encryption, how its quote binds them,
and the usage record it signs so a gateway that cannot read an answer can bill it.

An enclave that serves EHBP (Tinfoil's Encrypted HTTP Body Protocol) holds an HPKE
key pair (clients encrypt request bodies to its public key) and an Ed25519 usage
key (it signs the token counts of every encrypted answer). Both must be bound by
the enclave's TDX quote, or the gateway (or anyone between) could swap in a key
of its own and read prompts, or forge cheap usage. report_data for such an enclave:

    report_data[0:32]  = SHA-256("teegate-e2ee-v1\\0" ‖ SHA-256(TLS SPKI DER)
                                 ‖ SHA-256(HPKE key config) ‖ SHA-256(usage key))
    report_data[32:64] = nonce

An enclave without E2EE keys keeps the attested-tls layout
(SHA-256(TLS SPKI DER) ‖ nonce); the label keeps the two from ever colliding.

The usage record is canonical JSON (sorted keys, no spaces) naming the request
id, its encapsulated key, the model and the token counts; the enclave signs
"teegate-usage-v1\\0" ‖ record with Ed25519. It travels as
`X-TEE-Usage: base64url(record).base64url(signature)`. Naming the request id and
its encapsulated key makes a record of one request worthless for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass, field

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from teegate.attestation._binding import attested_tls_report_data

__all__ = [
    "HPKE_KEY_CONFIG_BYTES",
    "E2eeKeys",
    "UsageRecord",
    "e2ee_report_data",
    "hpke_public_key",
    "read_signed_usage",
]

E2EE_BINDING_LABEL = b"teegate-e2ee-v1\x00"
USAGE_SIGNATURE_LABEL = b"teegate-usage-v1\x00"
HPKE_KEY_CONFIG_BYTES = 41
"""RFC 9458 key config with one suite: id(1) kem(2) key(32) suites_len(2) kdf(2) aead(2)."""
_KEM_X25519 = 0x0020
_KDF_HKDF_SHA256 = 0x0001
_AEAD_AES_256_GCM = 0x0002
_USAGE_KEY_BYTES = 32
_MAX_USAGE_HEADER_CHARS = 2048


@dataclass(frozen=True)
class E2eeKeys:
    """An enclave's E2EE public keys, as its evidence presents them and its quote binds them."""

    hpke_key_config: bytes = field(repr=False)
    usage_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        hpke_public_key(self.hpke_key_config)  # refuses a malformed config
        if len(self.usage_key) != _USAGE_KEY_BYTES:
            raise ValueError("the usage key must be a raw 32-byte Ed25519 public key")

    def digest(self, tls_spki_sha256: bytes) -> bytes:
        """The first half of report_data: the TLS key and both E2EE keys, in one hash."""
        return hashlib.sha256(
            E2EE_BINDING_LABEL
            + tls_spki_sha256
            + hashlib.sha256(self.hpke_key_config).digest()
            + hashlib.sha256(self.usage_key).digest()
        ).digest()


def e2ee_report_data(tls_spki_sha256: bytes, keys: E2eeKeys, nonce: bytes) -> bytes:
    """attested-tls with E2EE: the digest above ‖ nonce."""
    if len(tls_spki_sha256) != 32:
        raise ValueError("the TLS SPKI digest must be 32 bytes")
    return attested_tls_report_data(keys.digest(tls_spki_sha256), nonce)


def hpke_public_key(config: bytes) -> bytes:
    """The X25519 public key of an EHBP key config, which must name EHBP's one suite
    (X25519 / HKDF-SHA256 / AES-256-GCM): any other suite is refused, not negotiated."""
    if len(config) != HPKE_KEY_CONFIG_BYTES:
        raise ValueError(f"an HPKE key config is {HPKE_KEY_CONFIG_BYTES} bytes")
    (kem,) = struct.unpack_from(">H", config, 1)
    suites_len, kdf, aead = struct.unpack_from(">HHH", config, 35)
    if (kem, suites_len, kdf, aead) != (_KEM_X25519, 4, _KDF_HKDF_SHA256, _AEAD_AES_256_GCM):
        raise ValueError("the HPKE key config names a suite other than EHBP's")
    return config[3:35]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one encrypted answer cost the enclave, as it signed it."""

    request_id: str
    encapsulated_key: str
    model: str
    prompt_tokens: int
    completion_tokens: int

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "completion_tokens": self.completion_tokens,
                "encapsulated_key": self.encapsulated_key,
                "model": self.model,
                "prompt_tokens": self.prompt_tokens,
                "request_id": self.request_id,
            }
        )

    def signed(self, key: Ed25519PrivateKey) -> str:
        """The `X-TEE-Usage` header value (what the enclave sends)."""
        record = self.encode()
        signature = key.sign(USAGE_SIGNATURE_LABEL + record)
        return f"{_b64(record)}.{_b64(signature)}"


def read_signed_usage(
    value: str | None,
    usage_key: bytes,
    *,
    request_id: str,
    encapsulated_key: str,
    model: str,
) -> UsageRecord | None:
    """The usage record if `value` is one the attested usage key signed for this very
    request; None otherwise (missing, malformed, forged, or another request's), and the
    caller then bills by its fallback rule."""
    if value is None or len(value) > _MAX_USAGE_HEADER_CHARS or "." not in value:
        return None
    record_b64, signature_b64 = value.split(".", 1)
    try:
        record, signature = _unb64(record_b64), _unb64(signature_b64)
        Ed25519PublicKey.from_public_bytes(usage_key).verify(
            signature, USAGE_SIGNATURE_LABEL + record
        )
        fields = orjson.loads(record)
    except (ValueError, InvalidSignature, binascii.Error, orjson.JSONDecodeError):
        return None
    if not isinstance(fields, dict):
        return None
    usage = _usage_record(fields)
    expected = (request_id, encapsulated_key.lower(), model)
    if usage is None or (usage.request_id, usage.encapsulated_key.lower(), usage.model) != expected:
        return None
    return usage


def _usage_record(fields: dict[str, object]) -> UsageRecord | None:
    request_id, encapsulated_key, model = (
        fields.get("request_id"),
        fields.get("encapsulated_key"),
        fields.get("model"),
    )
    prompt, completion = fields.get("prompt_tokens"), fields.get("completion_tokens")
    if not (
        isinstance(request_id, str) and isinstance(encapsulated_key, str) and isinstance(model, str)
    ):
        return None
    if not (_count(prompt) and _count(completion)):
        return None
    assert isinstance(prompt, int) and isinstance(completion, int)
    return UsageRecord(request_id, encapsulated_key, model, prompt, completion)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
