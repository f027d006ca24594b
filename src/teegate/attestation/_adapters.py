"""The adapters that fetch evidence over HTTP, and what it must bind, per mode.

An adapter turns one request with teegate's fresh nonce into `InstanceEvidence`:
the quote, the report_data it must carry, GPU evidence, and the key it binds. It
does no verification itself; `EvidenceVerifier` does the same checks for every mode.
This is attestation's HTTP edge (with `_http.py` and `_nras.py`): it is exported by
`teegate.attestation.http`, never loaded by `import teegate.attestation`.

    attested-tls       GET {base}/v1/attestation/report?nonce=<hex>; report_data =
                       SHA-256(TLS SPKI of the connection it came over) ‖ nonce, or
                       with EHBP keys (`e2ee` in the report) the E2EE layout of
                       `_e2ee.py`, and the key config at /.well-known/hpke-keys must
                       be the one bound
    chutes             GET {api}/chutes/{chute_id}/evidence?nonce=<hex>, one entry per
                       instance; report_data = SHA-256(nonce_hex + e2e pubkey b64) ‖
                       SHA-256(instance certificate SPKI)
    provider-asserted  no evidence: the upstream catalog's confidential_compute flag
                       (`ProviderAssertedAdapter`: no HTTP, so not here)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from teegate.attestation._binding import (
    attested_tls_report_data,
    certificate_der,
    chutes_report_data,
    spki_sha256,
)
from teegate.attestation._e2ee import E2eeKeys, e2ee_report_data
from teegate.attestation._evidence import AttestationMode, EvidenceBatch, InstanceEvidence
from teegate.attestation._gpu import GpuEvidence
from teegate.attestation._http import EvidenceHttpClient
from teegate.errors import AttestationFailed

__all__ = ["AttestedTlsAdapter", "ChutesAdapter"]

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_MAX_INSTANCES = 256
_MAX_GPU_ITEMS = 64
_MAX_FIELD_CHARS = 256 * 1024


class AttestedTlsAdapter:
    """attested-tls: the upstream's quote binds the TLS key it serves evidence with.

    The evidence connection skips CA checks on purpose: trust comes from the quote
    binding the key of the certificate this very connection presented, which the
    gateway then pins for inference traffic.
    """

    def __init__(self, base_url: str, *, http: EvidenceHttpClient | None = None) -> None:
        if not base_url.startswith("https://"):
            raise ValueError(
                "attested-tls needs an https:// upstream: the binding is to its TLS key"
            )
        self.base_url = base_url.rstrip("/")
        self._http = http or EvidenceHttpClient(record_peer_certificate=True)

    def __repr__(self) -> str:
        return f"AttestedTlsAdapter({self.base_url!r})"

    @property
    def mode(self) -> AttestationMode:
        return "attested-tls"

    async def fetch(self, nonce: bytes) -> EvidenceBatch:
        url = f"{self.base_url}/v1/attestation/report"
        response = await self._http.get_json(url, params={"nonce": nonce.hex()})
        if response.peer_certificate_der is None:
            raise AttestationFailed("tls", "evidence did not arrive over TLS: nothing to bind")
        body = _object(response.body, "attestation report")
        cert = response.peer_certificate_der
        spki = spki_sha256(cert)
        e2ee = _e2ee_keys(body.get("e2ee"))
        if e2ee is None:
            expected = attested_tls_report_data(spki, nonce)
        else:
            expected = e2ee_report_data(spki, e2ee, nonce)
            await self._require_served(e2ee, cert)
        evidence = InstanceEvidence(
            instance_id=None,
            quote=_quote_bytes(body.get("quote")),
            expected_report_data=expected,
            gpu=_gpu_evidence(body.get("gpu_evidence"), body.get("nvidia_token")),
            tls_spki_sha256=spki,
            tls_cert_sha256=hashlib.sha256(cert).digest(),
            e2ee=e2ee,
        )
        return EvidenceBatch(instances=(evidence,))

    async def _require_served(self, e2ee: E2eeKeys, certificate: bytes) -> None:
        """The key config the enclave serves EHBP clients (over the same TLS key) must
        be the one its quote binds: one it swapped in would be a key no quote vouches for."""
        served, served_by = await self._http.get_bytes(f"{self.base_url}/.well-known/hpke-keys")
        if served_by != certificate:
            raise AttestationFailed("tls", "the HPKE key config came from another TLS key")
        if served != e2ee.hpke_key_config:
            raise AttestationFailed(
                "e2ee_key", "the HPKE key the enclave serves is not the one its quote binds"
            )

    async def aclose(self) -> None:
        await self._http.aclose()


def _e2ee_keys(value: object) -> E2eeKeys | None:
    """The report's `e2ee` object (hex key config and usage key), if it has one."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise AttestationFailed("e2ee", "the report's e2ee keys are not an object")
    config, usage = value.get("hpke_key_config"), value.get("usage_key")
    if not (isinstance(config, str) and _HEX.fullmatch(config)):
        raise AttestationFailed("e2ee", "hpke_key_config is not hex")
    if not (isinstance(usage, str) and _HEX.fullmatch(usage)):
        raise AttestationFailed("e2ee", "usage_key is not hex")
    try:
        return E2eeKeys(bytes.fromhex(config), bytes.fromhex(usage))
    except ValueError as exc:
        raise AttestationFailed("e2ee", str(exc)) from exc


class ChutesAdapter:
    """chutes: one quote per instance, bound to its certificate and its e2e public key.

    The e2e key comes from the evidence entry (`e2e_pubkey`) or else from
    `GET /e2e/instances/{chute_id}`; the verdict records the key that was verified,
    and that key is the only one the gateway may encrypt to.
    """

    def __init__(
        self,
        chute_id: str,
        *,
        api_base: str = "https://api.chutes.ai",
        api_key: str | None = None,
        http: EvidenceHttpClient | None = None,
    ) -> None:
        self.chute_id = chute_id
        self.api_base = api_base.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._http = http or EvidenceHttpClient(headers=headers)

    def __repr__(self) -> str:
        return f"ChutesAdapter({self.chute_id!r}, api_base={self.api_base!r})"

    @property
    def mode(self) -> AttestationMode:
        return "chutes"

    async def fetch(self, nonce: bytes) -> EvidenceBatch:
        url = f"{self.api_base}/chutes/{self.chute_id}/evidence"
        body = _object(
            (await self._http.get_json(url, params={"nonce": nonce.hex()})).body, "evidence"
        )
        entries = _list(body.get("evidence", []), "evidence", _MAX_INSTANCES)
        failed_ids = _list(
            body.get("failed_instance_ids", []), "failed_instance_ids", _MAX_INSTANCES
        )
        pubkeys = await self._pubkeys(entries)
        instances: list[InstanceEvidence] = []
        rejected = [
            (str(i), AttestationFailed("evidence_unavailable", "Chutes reports no evidence"))
            for i in failed_ids
        ]
        for entry in entries:
            try:
                instances.append(_chutes_instance(entry, nonce, pubkeys))
            except AttestationFailed as failure:
                rejected.append((_instance_id(entry), failure))
        return EvidenceBatch(instances=tuple(instances), rejected=tuple(rejected))

    async def _pubkeys(self, entries: list[Any]) -> Mapping[str, str]:
        """Instance id → e2e public key, fetched only if an entry lacks its own."""
        if all(isinstance(e, Mapping) and e.get("e2e_pubkey") for e in entries):
            return {}
        url = f"{self.api_base}/e2e/instances/{self.chute_id}"
        body = _object((await self._http.get_json(url)).body, "e2e instances")
        items = _list(body.get("instances", []), "instances", _MAX_INSTANCES)
        return {
            str(i["instance_id"]): str(i["e2e_pubkey"])
            for i in items
            if isinstance(i, Mapping) and i.get("instance_id") and i.get("e2e_pubkey")
        }

    async def aclose(self) -> None:
        await self._http.aclose()


# ---- parsing evidence documents: malformed evidence is a rejection ----


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AttestationFailed("evidence_format", f"{what} is not a JSON object")
    return value


def _list(value: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise AttestationFailed("evidence_format", f"{what} is not a list of at most {limit}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD_CHARS:
        raise AttestationFailed("evidence_format", f"{what} is missing or not a bounded string")
    return value


def _quote_bytes(value: Any) -> bytes:
    """A quote given as hex or base64 text."""
    text = _text(value, "quote").strip()
    try:
        if _HEX.fullmatch(text):
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise AttestationFailed("evidence_format", "quote is neither hex nor base64") from exc


def _gpu_evidence(evidence: Any, tokens: Any) -> GpuEvidence | None:
    """GPU evidence as `{"arch", "evidence_list"}`, a bare list of items, and/or NRAS tokens."""
    if evidence is None and tokens is None:
        return None
    arch = "HOPPER"
    if isinstance(evidence, Mapping):
        arch = str(evidence.get("arch") or arch)[:32]
        evidence = evidence.get("evidence_list")
    items = _list(evidence if evidence is not None else [], "gpu_evidence", _MAX_GPU_ITEMS)
    if not all(isinstance(i, Mapping) for i in items):
        raise AttestationFailed("evidence_format", "gpu_evidence items are not objects")
    return GpuEvidence(evidence_list=tuple(items), arch=arch, tokens=tokens)


def _instance_id(entry: Any) -> str:
    value = entry.get("instance_id") if isinstance(entry, Mapping) else None
    return str(value)[:128] if value else "unknown"


def _chutes_instance(entry: Any, nonce: bytes, pubkeys: Mapping[str, str]) -> InstanceEvidence:
    item = _object(entry, "evidence entry")
    instance_id = _text(item.get("instance_id"), "instance_id")[:128]
    pubkey = item.get("e2e_pubkey") or pubkeys.get(instance_id)
    if not pubkey:
        raise AttestationFailed("evidence_format", f"no e2e public key for instance {instance_id}")
    try:
        certificate = base64.b64decode(_text(item.get("certificate"), "certificate"), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise AttestationFailed("evidence_format", "certificate is not base64") from exc
    der = certificate_der(certificate)
    return InstanceEvidence(
        instance_id=instance_id,
        quote=_quote_bytes(item.get("quote")),
        expected_report_data=chutes_report_data(nonce, str(pubkey), der),
        gpu=_gpu_evidence(item.get("gpu_evidence"), item.get("nvidia_token")),
        tls_spki_sha256=spki_sha256(der),
        tls_cert_sha256=hashlib.sha256(der).digest(),
        e2e_pubkey=str(pubkey),
    )
