"""The simulated enclave's side of EHBP (Tinfoil's Encrypted HTTP Body Protocol).

Written from the protocol (RFC 9458 key config, HPKE base mode with
X25519 / HKDF-SHA256 / AES-256-GCM, info "ehbp request"; responses under keys
derived OHTTP-style from the HPKE exporter, "ehbp response"), with HPKE from
`pyhpke` and HKDF / AES-GCM from `cryptography`:

    request   Ehbp-Encapsulated-Key: hex(enc); body: frames u32be(len) ‖ HPKE seal(chunk)
    response  Ehbp-Response-Nonce: hex(32 random bytes); body: frames
              u32be(len) ‖ AES-256-GCM(key, base_nonce XOR seq, chunk), where
              prk = HKDF-Extract(enc ‖ response nonce, export("ehbp response", 32)),
              key = HKDF-Expand(prk, "key", 32), base_nonce = HKDF-Expand(prk, "nonce", 12)

It holds the HPKE key pair and the Ed25519 key usage records are signed with, and
keeps streams' signed usage for the gateway to fetch by request id. Under the
`hpke-key-swap` fault it serves (and decrypts with) a key its quotes do not bind.
"""

from __future__ import annotations

import secrets
import struct
from collections import OrderedDict
from collections.abc import Iterator

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKeyInterface

from teegate.attestation import E2eeKeys, UsageRecord

HPKE_REQUEST_INFO = b"ehbp request"
EXPORT_LABEL = b"ehbp response"
KEYS_MEDIA_TYPE = "application/ohttp-keys"
KEYS_PATH = "/.well-known/hpke-keys"
RESPONSE_NONCE_HEADER = "Ehbp-Response-Nonce"
_KEY_ID = 0
_KEM_X25519, _KDF_HKDF_SHA256, _AEAD_AES_256_GCM = 0x0020, 0x0001, 0x0002
_LENGTH = struct.Struct(">I")
_KEPT_USAGE_RECORDS = 4096


class UnreadableRequest(ValueError):
    """The body did not decrypt under the enclave's key (or is not EHBP framing)."""


class EnclaveE2ee:
    """The enclave's EHBP keys, request opening, response sealing, usage signing."""

    def __init__(self) -> None:
        self._suite = CipherSuite.new(
            KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM
        )
        self._bound = self._suite.kem.derive_key_pair(secrets.token_bytes(32))
        self._rogue = self._suite.kem.derive_key_pair(secrets.token_bytes(32))
        self._signer = Ed25519PrivateKey.generate()
        self._usage: OrderedDict[str, str] = OrderedDict()
        self.keys = E2eeKeys(
            _key_config(self._bound.public_key.to_public_bytes()),
            self._signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
        )

    def __repr__(self) -> str:
        return "EnclaveE2ee()"

    def key_config(self, *, swapped: bool) -> bytes:
        """What `/.well-known/hpke-keys` serves: the bound key, or the rogue one."""
        if swapped:
            return _key_config(self._rogue.public_key.to_public_bytes())
        return self.keys.hpke_key_config

    def open(self, encapsulated_key: bytes, body: bytes, *, swapped: bool) -> tuple[bytes, bytes]:
        """The request's plaintext and the HPKE exporter secret its response keys
        derive from."""
        key: KEMKeyInterface = (self._rogue if swapped else self._bound).private_key
        try:
            recipient = self._suite.create_recipient_context(
                encapsulated_key, key, info=HPKE_REQUEST_INFO
            )
            plaintext = b"".join(recipient.open(frame, b"") for frame in _frames(body))
            secret = recipient.export(EXPORT_LABEL, 32)
        except Exception as exc:  # pyhpke raises its own and cryptography's errors
            raise UnreadableRequest("the request does not decrypt under this key") from exc
        return plaintext, secret

    def sealer(self, exported_secret: bytes, encapsulated_key: bytes) -> ResponseSealer:
        """The response sealer for a request `open` returned `exported_secret` for."""
        return ResponseSealer(exported_secret, encapsulated_key)

    def sign(self, record: UsageRecord) -> str:
        return record.signed(self._signer)

    def keep_usage(self, request_id: str, signed: str) -> None:
        """Remember a stream's signed usage (the newest few thousand) for the gateway."""
        self._usage[request_id] = signed
        while len(self._usage) > _KEPT_USAGE_RECORDS:
            self._usage.popitem(last=False)

    def usage(self, request_id: str) -> str | None:
        return self._usage.get(request_id)


class ResponseSealer:
    """Seals one response's chunks: AES-256-GCM frames under keys derived from the
    request's exporter secret, its encapsulated key and a fresh response nonce."""

    def __init__(self, exported_secret: bytes, encapsulated_key: bytes) -> None:
        self.nonce = secrets.token_bytes(32)
        prk = _hkdf_extract(encapsulated_key + self.nonce, exported_secret)
        self._aead = AESGCM(_hkdf_expand(prk, b"key", 32))
        self._base = _hkdf_expand(prk, b"nonce", 12)
        self._seq = 0

    def seal(self, chunk: bytes) -> bytes:
        nonce = self._base[:4] + bytes(
            a ^ b for a, b in zip(self._base[4:], self._seq.to_bytes(8, "big"), strict=True)
        )
        self._seq += 1
        ciphertext = self._aead.encrypt(nonce, chunk, b"")
        return _LENGTH.pack(len(ciphertext)) + ciphertext


def _key_config(public_key: bytes) -> bytes:
    """RFC 9458 key config with EHBP's one suite."""
    return (
        struct.pack(">BH", _KEY_ID, _KEM_X25519)
        + public_key
        + struct.pack(">HHH", 4, _KDF_HKDF_SHA256, _AEAD_AES_256_GCM)
    )


def _frames(body: bytes) -> Iterator[bytes]:
    offset = 0
    while offset < len(body):
        if len(body) - offset < _LENGTH.size:
            raise UnreadableRequest("truncated frame length")
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        if length == 0:
            continue
        if len(body) - offset < length:
            raise UnreadableRequest("truncated frame")
        yield body[offset : offset + length]
        offset += length


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    mac = hmac.HMAC(salt, hashes.SHA256())
    mac.update(ikm)
    return mac.finalize()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)
