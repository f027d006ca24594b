"""The simulated enclave: the TEE identity behind the devstack's attested upstream.

It holds what a real confidential VM holds: a TLS key pair (self-signed; its
quotes bind the key, so it needs no CA), the test DCAP PKI standing in for the
CPU's quoting enclave, and, for Chutes, two instances with their own
certificates and e2e keys. It makes the evidence documents and applies the
enclave faults to them; the routes that serve them are in `_evidence.py`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from teegate.attestation import E2eeKeys, e2ee_report_data, spki_sha256
from teegate.devstack._e2ee import EnclaveE2ee
from teegate.devstack._faults import (
    ATTEST_DEBUG,
    ATTEST_NO_GPU,
    ATTEST_REPLAY,
    ATTEST_TAMPERED,
    ATTEST_UNBOUND,
    ATTEST_WRONG_MRTD,
    TLS_KEY_SWAP,
    FaultState,
)
from teegate.devstack.tdx_pki import (
    DEFAULT_MR_TD,
    TdxTestPki,
    attested_tls_report,
    chutes_evidence_entry,
    fake_gpu_evidence,
    self_signed_tls_certificate,
)

CHUTES_INSTANCES = 2
_GPU_ARCH = "HOPPER"
_E2E_PUBKEY_BYTES = 1184  # an ML-KEM-768 public key's size; the bytes are opaque here
_QUOTE_HEADER_BYTES = 48
_MR_TD_OFFSET = 136  # where MRTD starts in the TD report body


@dataclass(frozen=True)
class _Instance:
    """One Chutes instance: its id, its e2e public key and its certificate."""

    instance_id: str
    e2e_pubkey_b64: str = field(repr=False)
    certificate_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class _Answer:
    """How one evidence answer is made, decided once from the faults active now."""

    nonce: bytes
    mr_td: bytes
    debug: bool
    unbound: bool
    tampered: bool
    gpu: bool


class SimulatedEnclave:
    """A TEE identity for the devstack: TLS key, test DCAP PKI, Chutes instances.

    One per devstack app (`build_app(config, enclave=...)` binds the app's faults
    to it). Serve that app over TLS with `write_tls_files` and
    `ssl_context_factory`; tell the gateway's verifier about `root_ca_der`.
    """

    def __init__(
        self, *, pki: TdxTestPki | None = None, mr_td: bytes = DEFAULT_MR_TD, e2ee: bool = False
    ) -> None:
        """With `e2ee`, it also holds EHBP keys (HPKE and usage signing), and its quotes
        bind them with the TLS key (the E2EE report_data layout)."""
        if len(mr_td) != 48:
            raise ValueError("mr_td must be 48 bytes")
        self.pki = pki or TdxTestPki()
        self.mr_td = mr_td
        self._cert_pem, self._key_pem = self_signed_tls_certificate()
        self._foreign_cert_pem, _ = self_signed_tls_certificate()  # a key it does not use
        self._instances = tuple(_new_instance(i) for i in range(CHUTES_INSTANCES))
        self._first_nonce: bytes | None = None
        self._faults: FaultState | None = None
        self._swap_context: ssl.SSLContext | None = None
        self.e2ee = EnclaveE2ee() if e2ee else None

    def __repr__(self) -> str:
        return f"SimulatedEnclave(tls_cert_sha256={self.tls_cert_sha256.hex()[:16]}…, {self.pki!r})"

    @property
    def root_ca_der(self) -> bytes:
        """The dev root CA the gateway's verifier must be configured with (never Intel's)."""
        return self.pki.root_der

    @property
    def tls_cert_sha256(self) -> bytes:
        """SHA-256 of the DER certificate whose key the quotes bind: the gateway's TLS pin."""
        return hashlib.sha256(_der(self._cert_pem)).digest()

    @property
    def chutes_instance_ids(self) -> tuple[str, ...]:
        return tuple(i.instance_id for i in self._instances)

    # ---- TLS ----

    def write_tls_files(self, directory: Path) -> tuple[Path, Path]:
        """Write the TLS certificate and key (mode 0600) for uvicorn: (certfile, keyfile)."""
        directory.mkdir(parents=True, exist_ok=True)
        return _write_key_pair(directory, self._cert_pem, self._key_pem)

    def ssl_context_factory(
        self, config: uvicorn.Config, default: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        """uvicorn's `ssl_context_factory`: the default context, plus the tls-key-swap hook.

        While `tls-key-swap` is on, each new connection's handshake switches to a
        context with a brand-new certificate, while the quotes keep binding the old
        key; turned off, new connections get the enclave's own certificate again.
        """
        certfile = config.ssl_certfile
        if certfile is None or Path(certfile).read_bytes() != self._cert_pem:
            raise ValueError("serve the enclave's own certificate: pass write_tls_files()'s files")
        context = default()
        if self._swap_context is None:
            self._swap_context = _server_context(*self_signed_tls_certificate())
        context.sni_callback = self._on_client_hello
        return context

    def _on_client_hello(
        self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        """Called by OpenSSL in every handshake, with or without SNI."""
        if self._swap_context is not None and TLS_KEY_SWAP in self._active():
            connection.context = self._swap_context

    # ---- evidence ----

    def bind_faults(self, faults: FaultState) -> None:
        """Read the enclave faults from `faults` (the serving app's); `build_app` calls it."""
        if self._faults is not None and self._faults is not faults:
            raise ValueError("one SimulatedEnclave per devstack app")
        self._faults = faults

    def attestation_report(self, nonce: bytes) -> dict[str, Any]:
        """attested-tls: a quote binding SHA-256(TLS SPKI) ‖ nonce, plus raw GPU evidence."""
        how = self._answer(nonce)
        bound = self._foreign_cert_pem if how.unbound else self._cert_pem
        if self.e2ee is not None:
            body = self._e2ee_report(how, bound, self.e2ee.keys)
        else:
            body = attested_tls_report(self.pki, how.nonce, bound, mr_td=how.mr_td, debug=how.debug)
        if how.tampered:
            body["quote"] = _flip_bit(bytes.fromhex(body["quote"])).hex()
        if how.gpu:
            body["gpu_evidence"] = {"arch": _GPU_ARCH, "evidence_list": fake_gpu_evidence(1)}
        return body

    def _e2ee_report(self, how: _Answer, bound: bytes, keys: E2eeKeys) -> dict[str, Any]:
        """attested-tls with EHBP: the quote binds the TLS key and both E2EE keys."""
        report_data = e2ee_report_data(spki_sha256(bound), keys, how.nonce)
        quote = self.pki.quote(report_data, mr_td=how.mr_td, debug=how.debug)
        return {
            "nonce": how.nonce.hex(),
            "quote": quote.hex(),
            "e2ee": {
                "hpke_key_config": keys.hpke_key_config.hex(),
                "usage_key": keys.usage_key.hex(),
            },
        }

    def chutes_evidence(self, nonce: bytes) -> dict[str, Any]:
        """Chutes' `GET /chutes/{id}/evidence`: one entry per instance."""
        how = self._answer(nonce)
        entries = [self._chutes_entry(instance, how) for instance in self._instances]
        return {"evidence": entries, "failed_instance_ids": []}

    def e2e_instances(self) -> dict[str, Any]:
        """Chutes' `GET /e2e/instances/{id}`: each instance's e2e public key."""
        instances = [
            {"instance_id": i.instance_id, "e2e_pubkey": i.e2e_pubkey_b64} for i in self._instances
        ]
        return {"instances": instances}

    def _chutes_entry(self, instance: _Instance, how: _Answer) -> dict[str, Any]:
        bound = self._foreign_cert_pem if how.unbound else instance.certificate_pem
        entry = chutes_evidence_entry(
            self.pki,
            how.nonce,
            instance_id=instance.instance_id,
            e2e_pubkey_b64=instance.e2e_pubkey_b64,
            certificate_pem=bound,
            mr_td=how.mr_td,
            debug=how.debug,
        )
        entry["certificate"] = base64.b64encode(instance.certificate_pem).decode()
        if how.tampered:
            entry["quote"] = base64.b64encode(_flip_bit(base64.b64decode(entry["quote"]))).decode()
        if not how.gpu:
            del entry["gpu_evidence"]
        return entry

    def _answer(self, nonce: bytes) -> _Answer:
        """Apply the faults: the first nonce ever seen is what attest-replay replays."""
        if self._first_nonce is None:
            self._first_nonce = nonce
        faults = self._active()
        return _Answer(
            nonce=self._first_nonce if ATTEST_REPLAY in faults else nonce,
            mr_td=_other_mr_td(self.mr_td) if ATTEST_WRONG_MRTD in faults else self.mr_td,
            debug=ATTEST_DEBUG in faults,
            unbound=ATTEST_UNBOUND in faults,
            tampered=ATTEST_TAMPERED in faults,
            gpu=ATTEST_NO_GPU not in faults,
        )

    def _active(self) -> frozenset[str]:
        return self._faults.active if self._faults is not None else frozenset()


def _new_instance(index: int) -> _Instance:
    certificate_pem, _ = self_signed_tls_certificate(f"chutes-instance-{index}")
    return _Instance(
        instance_id=f"inst-{index}-{secrets.token_hex(4)}",
        e2e_pubkey_b64=base64.b64encode(secrets.token_bytes(_E2E_PUBKEY_BYTES)).decode(),
        certificate_pem=certificate_pem,
    )


def _other_mr_td(mr_td: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in mr_td)


def _flip_bit(quote: bytes) -> bytes:
    """The quote with one bit of its MRTD flipped after signing."""
    index = _QUOTE_HEADER_BYTES + _MR_TD_OFFSET
    return quote[:index] + bytes([quote[index] ^ 0x01]) + quote[index + 1 :]


def _der(certificate_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)


def _server_context(certificate_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS server context for this certificate (OpenSSL loads keys from files only)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="teegate-enclave-") as directory:
        context.load_cert_chain(*_write_key_pair(Path(directory), certificate_pem, key_pem))
    return context


def _write_key_pair(directory: Path, certificate_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    certfile, keyfile = directory / "enclave-cert.pem", directory / "enclave-key.pem"
    certfile.write_bytes(certificate_pem)
    keyfile.touch(mode=0o600)
    keyfile.chmod(0o600)  # touch leaves an existing file's mode alone
    keyfile.write_bytes(key_pem)
    return certfile, keyfile
