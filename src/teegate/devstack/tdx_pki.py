"""Simulated TEE trust roots: a test Intel DCAP PKI and a local NVIDIA attestation service.

Nothing here is trusted in production. `TdxTestPki` builds a root CA, the PCK chain,
CRLs, signed tcbInfo and QE identity, and TDX v4 quotes with any report_data, MRTD
and RTMRs, so that `dcap_qvl.verify_with_root_ca(quote, collateral, pki.root_der,
now)` accepts them while `dcap_qvl.verify` (Intel's root) refuses them. The
simulated upstream uses it at runtime and the tests use it to forge every attack,
so keys and certificates are made once per object and a quote costs one signature.

`LocalGpuAttestationService` stands in for NVIDIA's remote attestation service
(NRAS): it signs ES384 tokens with a local key and serves the matching JWKS.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import ipaddress
import json
import secrets
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

__all__ = [
    "DEFAULT_MR_TD",
    "DEFAULT_RTMRS",
    "TCB_STATUSES",
    "LocalGpuAttestationService",
    "TdxTestPki",
    "attested_tls_report",
    "chutes_evidence_entry",
    "collateral_window",
    "fake_gpu_evidence",
    "self_signed_tls_certificate",
]

_INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
_SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_QE_MR_SIGNER = bytes.fromhex("DC9E2A7C6F948F17474E34A7FC43ED030F7C1563F1BABDDF6340C82E0E54A8C5")
_QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
_QE_PROD_ID = 2
_QE_ISV_SVN = 4
_TDX_TEE_TYPE = 0x81
_TD_REPORT_BODY_LEN = 584
_QE_REPORT_LEN = 384
_XFAM = bytes.fromhex("e702060000000000")
_TD_ATTR_SEPT_VE_DISABLE = 0x10

#: The TCB statuses Intel's tcbInfo can carry; the collateral knob accepts any of them.
TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)
DEFAULT_MR_TD = b"\x03" * 48
DEFAULT_RTMRS: tuple[bytes, bytes, bytes, bytes] = (
    b"\x07" * 48,
    b"\x08" * 48,
    b"\x09" * 48,
    b"\x0a" * 48,
)
_DEFAULT_NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_DEFAULT_NOT_AFTER = dt.datetime(2045, 1, 1, tzinfo=dt.UTC)


# ---- a tiny DER encoder: only what the Intel SGX PCK extension needs ----


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_oid(dotted: str) -> bytes:
    arcs = [int(x) for x in dotted.split(".")]
    out = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        enc = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            enc.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(enc))
    return _tlv(0x06, out)


def _der_int(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big"))


def _der_seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _sgx_extension(fmspc: bytes, cpu_svn: bytes, pce_svn: int) -> bytes:
    """The SGX extension of a PCK certificate: dcap-qvl reads FMSPC and the TCB from it."""
    base = _SGX_EXTENSION_OID
    components = [_der_seq(_der_oid(f"{base}.2.{i + 1}"), _der_int(cpu_svn[i])) for i in range(16)]
    tcb = _der_seq(
        *components,
        _der_seq(_der_oid(f"{base}.2.17"), _der_int(pce_svn)),
        _der_seq(_der_oid(f"{base}.2.18"), _tlv(0x04, cpu_svn)),
    )
    return _der_seq(
        _der_seq(_der_oid(f"{base}.1"), _tlv(0x04, b"\x11" * 16)),  # PPID
        _der_seq(_der_oid(f"{base}.2"), tcb),
        _der_seq(_der_oid(f"{base}.3"), _tlv(0x04, b"\0\0")),  # PCE-ID
        _der_seq(_der_oid(f"{base}.4"), _tlv(0x04, fmspc)),
        _der_seq(_der_oid(f"{base}.5"), _tlv(0x0A, b"\0")),  # SGX type: Standard
    )


# ---- certificates, CRLs and raw ECDSA signatures ----


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TEST ONLY"),
        ]
    )


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """r ‖ s, 32 bytes each: the encoding DCAP uses for every signature."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    validity: tuple[dt.datetime, dt.datetime],
    extension: x509.ExtensionType | None = None,
) -> x509.Certificate:
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key())
        builder = builder.add_extension(aki, critical=False)
    if extension is not None:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _crl_der(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    window: tuple[dt.datetime, dt.datetime],
) -> bytes:
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(window[0])
        .next_update(window[1])
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(aki, critical=False)
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def collateral_window(
    now_s: float, *, before_s: int = 3600, after_s: int = 30 * 86400
) -> tuple[dt.datetime, dt.datetime]:
    """A collateral (issueDate, nextUpdate) window around `now_s`, for runtime use."""
    now = dt.datetime.fromtimestamp(int(now_s), tz=dt.UTC)
    return now - dt.timedelta(seconds=before_s), now + dt.timedelta(seconds=after_s)


class TdxTestPki:
    """A test DCAP PKI that signs TDX v4 quotes and their collateral.

    All keys and certificates are made once here; the quoting enclave's attestation
    key and its signed QE report too, so a quote costs one ECDSA signature.
    """

    def __init__(
        self,
        *,
        not_before: dt.datetime = _DEFAULT_NOT_BEFORE,
        not_after: dt.datetime = _DEFAULT_NOT_AFTER,
        fmspc: bytes = bytes.fromhex("00806F050000"),
        cpu_svn: bytes = bytes([2] * 16),
        pce_svn: int = 11,
    ) -> None:
        if len(fmspc) != 6 or len(cpu_svn) != 16:
            raise ValueError("fmspc must be 6 bytes and cpu_svn 16 bytes")
        self.fmspc = fmspc
        validity = (not_before, not_after)
        self._root_key = ec.generate_private_key(ec.SECP256R1())
        self._root = _certificate(
            "TEST SGX Root CA", self._root_key, None, ca=True, validity=validity
        )
        root = (self._root, self._root_key)
        self._pck_ca_key = ec.generate_private_key(ec.SECP256R1())
        self._pck_ca = _certificate(
            "TEST PCK Platform CA", self._pck_ca_key, root, ca=True, validity=validity
        )
        self._tcb_key = ec.generate_private_key(ec.SECP256R1())
        self._tcb = _certificate(
            "TEST TCB Signing", self._tcb_key, root, ca=False, validity=validity
        )
        self._pck_key = ec.generate_private_key(ec.SECP256R1())
        sgx_ext = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(_SGX_EXTENSION_OID), _sgx_extension(fmspc, cpu_svn, pce_svn)
        )
        self._pck = _certificate(
            "TEST PCK Certificate",
            self._pck_key,
            (self._pck_ca, self._pck_ca_key),
            ca=False,
            validity=validity,
            extension=sgx_ext,
        )
        self.root_der: bytes = self._root.public_bytes(serialization.Encoding.DER)
        self._attestation_key = ec.generate_private_key(ec.SECP256R1())
        self._qe_signature_data = self._build_qe_signature_data()

    def __repr__(self) -> str:
        return f"TdxTestPki(fmspc={self.fmspc.hex()}, root_sha256={self.root_sha256[:16]}…)"

    @property
    def root_sha256(self) -> str:
        return hashlib.sha256(self.root_der).hexdigest()

    # ---- collateral ----

    @functools.lru_cache(maxsize=64)  # noqa: B019 -- one PKI per process; bounded
    def collateral_json(
        self,
        *,
        issued_at: dt.datetime,
        next_update: dt.datetime,
        tcb_status: str = "UpToDate",
        advisory_ids: tuple[str, ...] = (),
    ) -> str:
        """DCAP collateral (QuoteCollateralV3 JSON) valid from `issued_at` to `next_update`.

        `tcb_status` and `advisory_ids` are what the platform's TCB level reports, so
        tests can make an OutOfDate, Revoked or advisory-carrying platform.
        """
        if tcb_status not in TCB_STATUSES:
            raise ValueError(f"unknown TCB status {tcb_status!r}")
        window = (issued_at, next_update)
        tcb_info = self._tcb_info(window, tcb_status, advisory_ids)
        qe_identity = self._qe_identity(window)
        chain = _pem(self._tcb, self._root)
        return json.dumps(
            {
                "pck_crl_issuer_chain": _pem(self._pck_ca, self._root),
                "root_ca_crl": _crl_der(self._root, self._root_key, window).hex(),
                "pck_crl": _crl_der(self._pck_ca, self._pck_ca_key, window).hex(),
                "tcb_info_issuer_chain": chain,
                "tcb_info": tcb_info,
                "tcb_info_signature": _raw_signature(self._tcb_key, tcb_info.encode()).hex(),
                "qe_identity_issuer_chain": chain,
                "qe_identity": qe_identity,
                "qe_identity_signature": _raw_signature(self._tcb_key, qe_identity.encode()).hex(),
            }
        )

    def _tcb_info(
        self,
        window: tuple[dt.datetime, dt.datetime],
        tcb_status: str,
        advisory_ids: Sequence[str],
    ) -> str:
        issued, next_update = (_iso(t) for t in window)
        module_identity = {
            "id": "TDX_03",
            "mrsigner": "00" * 48,
            "attributes": "00" * 8,
            "attributesMask": "ff" * 8,
            "tcbLevels": [{"tcb": {"isvsvn": 0}, "tcbDate": issued, "tcbStatus": "UpToDate"}],
        }
        svns = [{"svn": 0}] * 16
        level = {
            "tcb": {"sgxtcbcomponents": svns, "pcesvn": 0, "tdxtcbcomponents": svns},
            "tcbDate": issued,
            "tcbStatus": tcb_status,
            "advisoryIDs": list(advisory_ids),
        }
        info = {
            "id": "TDX",
            "version": 3,
            "issueDate": issued,
            "nextUpdate": next_update,
            "fmspc": self.fmspc.hex().upper(),
            "pceId": "0000",
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
            "tdxModule": {
                "mrsigner": "00" * 48,
                "attributes": "00" * 8,
                "attributesMask": "ff" * 8,
            },
            "tdxModuleIdentities": [module_identity],
            "tcbLevels": [level],
        }
        return json.dumps(info, separators=(",", ":"))

    @staticmethod
    def _qe_identity(window: tuple[dt.datetime, dt.datetime]) -> str:
        issued, next_update = (_iso(t) for t in window)
        identity = {
            "id": "TD_QE",
            "version": 2,
            "issueDate": issued,
            "nextUpdate": next_update,
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": _QE_ATTRIBUTES.hex().upper(),
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": _QE_MR_SIGNER.hex().upper(),
            "isvprodid": _QE_PROD_ID,
            "tcbLevels": [{"tcb": {"isvsvn": 0}, "tcbDate": issued, "tcbStatus": "UpToDate"}],
        }
        return json.dumps(identity, separators=(",", ":"))

    # ---- quotes ----

    def quote(
        self,
        report_data: bytes,
        *,
        mr_td: bytes = DEFAULT_MR_TD,
        rtmrs: Sequence[bytes] = DEFAULT_RTMRS,
        debug: bool = False,
    ) -> bytes:
        """A TDX v4 quote over a TD report with these fields, signed by this PKI's QE."""
        if len(report_data) != 64 or len(mr_td) != 48:
            raise ValueError("report_data must be 64 bytes and mr_td 48 bytes")
        if len(rtmrs) != 4 or any(len(r) != 48 for r in rtmrs):
            raise ValueError("rtmrs must be four 48-byte values")
        header = struct.pack(
            "<HHIHH16s20s", 4, 2, _TDX_TEE_TYPE, 0, 0, _INTEL_QE_VENDOR_ID, b"\0" * 20
        )
        body = self._td_report_body(report_data, mr_td, rtmrs, debug)
        signature = _raw_signature(self._attestation_key, header + body)
        auth = signature + self._attestation_public_key() + self._qe_signature_data
        return header + body + struct.pack("<I", len(auth)) + auth

    @staticmethod
    def _td_report_body(
        report_data: bytes, mr_td: bytes, rtmrs: Sequence[bytes], debug: bool
    ) -> bytes:
        td_attributes = bytes([1 if debug else 0, 0, 0, _TD_ATTR_SEPT_VE_DISABLE, 0, 0, 0, 0])
        tee_tcb_svn = bytes([3, 3]) + b"\0" * 14
        body = (
            tee_tcb_svn
            + b"\0" * 48  # mr_seam
            + b"\0" * 48  # mr_signer_seam
            + b"\0" * 8  # seam_attributes
            + td_attributes
            + _XFAM
            + mr_td
            + b"\0" * 48 * 3  # mr_config_id, mr_owner, mr_owner_config
            + b"".join(rtmrs)
            + report_data
        )
        if len(body) != _TD_REPORT_BODY_LEN:
            raise AssertionError("TD report body has the wrong length")
        return body

    def _attestation_public_key(self) -> bytes:
        point = self._attestation_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return point[1:]

    def _build_qe_signature_data(self) -> bytes:
        """QE report (binding the attestation key), its PCK signature, auth data, PCK chain."""
        qe_auth = b"\0" * 32
        qe_report_data = hashlib.sha256(self._attestation_public_key() + qe_auth).digest()
        qe_report = (
            b"\0" * 16  # cpu_svn
            + struct.pack("<I", 0)  # misc_select
            + b"\0" * 28
            + _QE_ATTRIBUTES
            + b"\0" * 32  # mr_enclave
            + b"\0" * 32
            + _QE_MR_SIGNER
            + b"\0" * 96
            + struct.pack("<HH", _QE_PROD_ID, _QE_ISV_SVN)
            + b"\0" * 60
            + qe_report_data
            + b"\0" * 32
        )
        if len(qe_report) != _QE_REPORT_LEN:
            raise AssertionError("QE report has the wrong length")
        chain = _pem(self._pck, self._pck_ca, self._root).encode()
        inner = (
            qe_report
            + _raw_signature(self._pck_key, qe_report)
            + struct.pack("<H", len(qe_auth))
            + qe_auth
            + struct.pack("<HI", 5, len(chain))  # certification data type 5: PCK chain
            + chain
        )
        return struct.pack("<HI", 6, len(inner)) + inner  # type 6: QE report data


class LocalGpuAttestationService:
    """A stand-in for NVIDIA's remote attestation service, signing with a local ES384 key.

    `attest` answers like NRAS v3 does: `[["JWT", overall], {"GPU-0": detached, ...}]`,
    where the overall token lists each detached token's SHA-256 under `submods`. Knobs
    let tests make a failed result or a per-GPU failure; a wrong nonce or a bad
    signature are made by the tests themselves.
    """

    def __init__(self, *, issuer: str = "https://nras.attestation.nvidia.com") -> None:
        self.issuer = issuer
        self.kid = secrets.token_hex(8)
        self._key = ec.generate_private_key(ec.SECP384R1())

    def __repr__(self) -> str:
        return f"LocalGpuAttestationService(issuer={self.issuer!r}, kid={self.kid!r})"

    def jwks(self) -> dict[str, Any]:
        """The JWKS document NRAS serves at /.well-known/jwks.json."""
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "alg": "ES384", "use": "sig"})
        return {"keys": [jwk]}

    def attest(
        self,
        evidence_list: Sequence[Mapping[str, Any]],
        nonce_hex: str,
        *,
        overall_result: bool = True,
        gpu_claims: Mapping[str, Any] | None = None,
        now_s: float | None = None,
    ) -> list[Any]:
        """Tokens for `evidence_list` (one detached token per GPU), bound to `nonce_hex`."""
        now = int(time.time() if now_s is None else now_s)
        detached: dict[str, str] = {}
        for index, item in enumerate(evidence_list):
            claims = self._gpu_claims(item, index, nonce_hex, now) | dict(gpu_claims or {})
            detached[f"GPU-{index}"] = self.sign(claims)
        submods = {
            name: ["DIGEST", ["SHA-256", hashlib.sha256(token.encode()).hexdigest()]]
            for name, token in detached.items()
        }
        overall = self._base_claims(nonce_hex, now) | {
            "x-nvidia-ver": "2.0",
            "x-nvidia-overall-att-result": overall_result,
            "submods": submods,
        }
        return [["JWT", self.sign(overall)], detached]

    def sign(self, claims: Mapping[str, Any]) -> str:
        """An ES384 JWT over `claims` with this service's key and kid."""
        return jwt.encode(dict(claims), self._key, algorithm="ES384", headers={"kid": self.kid})

    def _base_claims(self, nonce_hex: str, now: int) -> dict[str, Any]:
        return {
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": secrets.token_hex(8),
            "eat_nonce": nonce_hex,
        }

    def _gpu_claims(
        self, item: Mapping[str, Any], index: int, nonce_hex: str, now: int
    ) -> dict[str, Any]:
        evidence = str(item.get("evidence", ""))
        ueid = hashlib.sha256(base64.b64decode(evidence or "AA==") + bytes([index])).hexdigest()
        return self._base_claims(nonce_hex, now) | {
            "x-nvidia-device-type": "gpu",
            "hwmodel": "GH100 A01 GSP BROM",
            "ueid": ueid[:40],
            "measres": "success",
            "secboot": True,
            "dbgstat": "disabled",
            "x-nvidia-gpu-arch-check": True,
            "x-nvidia-gpu-attestation-report-parsed": True,
            "x-nvidia-gpu-attestation-report-nonce-match": True,
            "x-nvidia-gpu-attestation-report-signature-verified": True,
            "x-nvidia-gpu-attestation-report-cert-chain-validated": True,
            "x-nvidia-gpu-driver-rim-signature-verified": True,
            "x-nvidia-gpu-vbios-rim-signature-verified": True,
            "x-nvidia-gpu-driver-rim-measurements-available": True,
            "x-nvidia-gpu-vbios-rim-measurements-available": True,
        }


# ---- what a simulated confidential upstream serves ----


def self_signed_tls_certificate(
    common_name: str = "localhost", *, addresses: Iterable[str] = ("127.0.0.1",)
) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for an enclave's own TLS endpoint.

    An attested-tls upstream needs no CA: its quote binds this certificate's key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(common_name)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _spki_sha256(certificate: bytes) -> bytes:
    if certificate.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(certificate)
    else:
        cert = x509.load_der_x509_certificate(certificate)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def fake_gpu_evidence(count: int = 1) -> list[dict[str, str]]:
    """Opaque stand-ins for the GPU reports an NRAS request carries."""
    return [
        {
            "certificate": base64.b64encode(secrets.token_bytes(48)).decode(),
            "evidence": base64.b64encode(secrets.token_bytes(96)).decode(),
        }
        for _ in range(count)
    ]


def attested_tls_report(
    pki: TdxTestPki,
    nonce: bytes,
    tls_certificate: bytes,
    *,
    gpu: LocalGpuAttestationService | None = None,
    gpu_count: int = 1,
    include_gpu_token: bool = True,
    mr_td: bytes = DEFAULT_MR_TD,
    debug: bool = False,
) -> dict[str, Any]:
    """The body of `GET /v1/attestation/report?nonce=`: a quote binding the TLS key."""
    report_data = _spki_sha256(tls_certificate) + nonce
    body: dict[str, Any] = {
        "nonce": nonce.hex(),
        "quote": pki.quote(report_data, mr_td=mr_td, debug=debug).hex(),
    }
    if gpu is not None:
        items = fake_gpu_evidence(gpu_count)
        body["gpu_evidence"] = {"arch": "HOPPER", "evidence_list": items}
        if include_gpu_token:
            body["nvidia_token"] = gpu.attest(items, nonce.hex())
    return body


def chutes_evidence_entry(
    pki: TdxTestPki,
    nonce: bytes,
    *,
    instance_id: str,
    e2e_pubkey_b64: str,
    certificate_pem: bytes,
    gpu_count: int = 1,
    mr_td: bytes = DEFAULT_MR_TD,
    debug: bool = False,
) -> dict[str, Any]:
    """One entry of Chutes' `GET /chutes/{id}/evidence`, bound as Chutes documents it."""
    first = hashlib.sha256((nonce.hex() + e2e_pubkey_b64).encode("utf-8")).digest()
    report_data = first + _spki_sha256(certificate_pem)
    quote = pki.quote(report_data, mr_td=mr_td, debug=debug)
    return {
        "instance_id": instance_id,
        "quote": base64.b64encode(quote).decode(),
        "certificate": base64.b64encode(certificate_pem).decode(),
        "gpu_evidence": fake_gpu_evidence(gpu_count),
    }
