"""NVIDIA GPU evidence: verifying the tokens NVIDIA's remote attestation service (NRAS) signs.

NRAS v3 answers `[["JWT", overall], {"GPU-0": detached, ...}]`. The overall token
carries the service's verdict (`x-nvidia-overall-att-result`) and, under `submods`,
the SHA-256 of each detached per-GPU token, so one signature covers them all. Every
token must be ES384-signed by a key from the service's JWKS, issued by the
configured issuer, valid now, and carry our nonce (`eat_nonce`).

Pure functions, and the interface of the service that signs the tokens: fetching
tokens and keys over HTTP is `_nras.py`'s job (attestation's HTTP edge).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from teegate.attestation._check import CheckLog, summarize
from teegate.errors import AttestationFailed

__all__ = [
    "GpuAttestationService",
    "GpuDevice",
    "GpuEvidence",
    "GpuVerification",
    "parse_jwks",
    "verify_gpu_tokens",
]

_MAX_TOKEN_CHARS = 64 * 1024
_MAX_GPUS = 64
_CLOCK_SKEW_S = 60
#: Per-GPU claims that must be exactly these values (NRAS claims version 2.0).
_JWT_OPTIONS: Any = {
    "verify_exp": False,  # checked against the verifier's clock instead
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "require": ["iss", "exp", "eat_nonce"],
}
_REQUIRED_GPU_CLAIMS: Mapping[str, object] = {
    "measres": "success",
    "secboot": True,
    "dbgstat": "disabled",
    "x-nvidia-gpu-attestation-report-nonce-match": True,
    "x-nvidia-gpu-attestation-report-signature-verified": True,
}


@dataclass(frozen=True)
class GpuEvidence:
    """GPU evidence as an upstream presents it.

    Either raw GPU reports (`evidence_list`, `{"certificate", "evidence"}` items) that
    teegate submits to NRAS with its nonce, or `tokens`: an NRAS response the upstream
    obtained with teegate's nonce. Tokens are checked the same way either way.
    """

    evidence_list: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)
    arch: str = "HOPPER"
    tokens: Any = field(default=None, repr=False)

    @property
    def present(self) -> bool:
        return bool(self.evidence_list) or self.tokens is not None


class GpuAttestationService(Protocol):
    """Turns raw GPU evidence into signed tokens, and publishes the keys that sign them."""

    @property
    def issuer(self) -> str: ...

    async def attest(self, evidence: GpuEvidence, nonce: bytes) -> Any: ...

    async def signing_keys(self, *, refresh: bool = False) -> Mapping[str, jwt.PyJWK]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class GpuDevice:
    name: str
    hwmodel: str
    ueid: str
    driver_version: str | None
    vbios_version: str | None


@dataclass(frozen=True)
class GpuVerification:
    devices: tuple[GpuDevice, ...]
    expires_at_s: int
    tokens: Any = field(repr=False)


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The ES384 (P-384) signing keys of a JWKS document, by `kid`; other keys are ignored."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise AttestationFailed("gpu_signature", "JWKS document has no key list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or entry.get("crv") != "P-384" or not entry.get("kid"):
            continue
        try:
            keys[str(entry["kid"])] = jwt.PyJWK(dict(entry), algorithm="ES384")
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
    return keys


def verify_gpu_tokens(
    tokens: Any,
    keys: Mapping[str, jwt.PyJWK],
    *,
    nonce: bytes,
    now_s: int,
    issuer: str,
    log: CheckLog,
    expected_gpus: int | None = None,
) -> GpuVerification:
    """Check an NRAS response against `keys`, our `nonce` and the per-GPU claims."""
    checker = _TokenChecker(keys, issuer=issuer, nonce=nonce, now_s=now_s, log=log)
    overall_token, detached = _split(tokens, log)
    overall = checker.decode(overall_token, "overall token")
    log.require(
        overall.get("x-nvidia-overall-att-result") is True,
        "gpu_result",
        passed="x-nvidia-overall-att-result is true",
        failed="NRAS overall attestation result is not true",
    )
    devices = checker.detached(overall, detached)
    if expected_gpus is not None:
        log.require(
            len(devices) == expected_gpus,
            "gpu_result",
            passed=f"{expected_gpus} GPU(s) attested",
            failed=f"{len(devices)} GPU token(s) for {expected_gpus} GPU evidence item(s)",
        )
    log.passed("gpu_signature", f"ES384 tokens signed by a key of {issuer}")
    expires = min([int(overall["exp"])] + [exp for _, exp in devices])
    return GpuVerification(tuple(device for device, _ in devices), expires, tokens)


def _split(tokens: Any, log: CheckLog) -> tuple[str, Mapping[str, Any]]:
    """(overall token, detached tokens by GPU name) from NRAS's response or a bare token."""
    if isinstance(tokens, str):
        return tokens, {}
    shaped = (
        isinstance(tokens, list)
        and len(tokens) == 2
        and isinstance(tokens[0], list)
        and len(tokens[0]) == 2
        and tokens[0][0] == "JWT"
        and isinstance(tokens[0][1], str)
        and isinstance(tokens[1], Mapping)
        and len(tokens[1]) <= _MAX_GPUS
    )
    if not shaped:
        log.fail("gpu_evidence", "not an NRAS response ([['JWT', token], {GPU: token}])")
    return tokens[0][1], tokens[1]


class _TokenChecker:
    """Decodes and checks NRAS tokens against one key set, issuer, nonce and time."""

    def __init__(
        self,
        keys: Mapping[str, jwt.PyJWK],
        *,
        issuer: str,
        nonce: bytes,
        now_s: int,
        log: CheckLog,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._nonce_hex = nonce.hex().encode()
        self._now_s = now_s
        self._log = log

    def decode(self, token: Any, what: str) -> dict[str, Any]:
        """Signature, issuer, validity window and nonce of one token; its claims."""
        claims = self._verified_claims(token)
        self._check_time(claims)
        claimed = str(claims.get("eat_nonce", "")).lower().encode()
        self._log.require(
            hmac.compare_digest(claimed, self._nonce_hex),
            "gpu_nonce",
            passed=f"{what} carries this nonce",
            failed=f"{what} nonce does not match (replayed GPU evidence)",
        )
        return claims

    def detached(
        self, overall: Mapping[str, Any], detached: Mapping[str, Any]
    ) -> list[tuple[GpuDevice, int]]:
        """Each detached token: the one the overall token digested, then checked like it."""
        submods = overall.get("submods") or {}
        if detached and (not isinstance(submods, Mapping) or set(submods) != set(detached)):
            self._log.fail("gpu_signature", "detached tokens do not match the overall submods")
        devices = []
        for name in sorted(detached):
            token = detached[name]
            digest = hashlib.sha256(str(token).encode()).hexdigest()
            if submods.get(name) != ["DIGEST", ["SHA-256", digest]]:
                self._log.fail("gpu_signature", f"{name} token is not the one NRAS signed")
            claims = self.decode(token, f"{name} token")
            _check_gpu_claims(name, claims, self._log)
            devices.append((_device(name, claims), int(claims["exp"])))
        return devices

    def _verified_claims(self, token: Any) -> dict[str, Any]:
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN_CHARS:
            self._log.fail("gpu_evidence", "GPU token is not a bounded string")
        try:
            kid = str(jwt.get_unverified_header(token).get("kid"))
            key = self._keys.get(kid)
            if key is None:
                self._log.fail("gpu_signature", f"token key id {kid[:40]!r} is not in the JWKS")
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["ES384"], issuer=self._issuer, options=_JWT_OPTIONS
            )
        except AttestationFailed:
            raise
        except Exception as exc:  # PyJWT's and cryptography's alike: FAIL_CLOSED rejects
            self._log.fail("gpu_signature", f"token rejected: {summarize(exc)}")
        return claims

    def _check_time(self, claims: Mapping[str, Any]) -> None:
        """Validity against the verifier's clock (not PyJWT's), so tests can fix the time."""
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int) or not isinstance(nbf, int):
            self._log.fail("gpu_signature", "token exp/nbf are not integers")
        if not nbf - _CLOCK_SKEW_S <= self._now_s < exp:
            self._log.fail("gpu_signature", f"token valid {nbf}..{exp}, not at {self._now_s}")


def _check_gpu_claims(name: str, claims: Mapping[str, Any], log: CheckLog) -> None:
    wrong = [k for k, v in _REQUIRED_GPU_CLAIMS.items() if claims.get(k) != v]
    log.require(
        not wrong,
        "gpu_result",
        passed=f"{name}: measurements match, secure boot, debug disabled",
        failed=f"{name}: claims not as required: {', '.join(wrong)}",
    )


def _device(name: str, claims: Mapping[str, Any]) -> GpuDevice:
    def text(key: str) -> str | None:
        value = claims.get(key)
        return str(value)[:200] if value is not None else None

    return GpuDevice(
        name=name,
        hwmodel=text("hwmodel") or "",
        ueid=text("ueid") or "",
        driver_version=text("x-nvidia-gpu-driver-version"),
        vbios_version=text("x-nvidia-gpu-vbios-version"),
    )
