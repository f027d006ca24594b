"""NVIDIA GPU tokens: ES384 against the JWKS, nonce, overall result, per-GPU claims."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from teegate.attestation import CheckLog, parse_jwks, verify_gpu_tokens
from teegate.devstack.tdx_pki import LocalGpuAttestationService, fake_gpu_evidence
from teegate.errors import AttestationFailed

NONCE = bytes(range(32))
NOW = int(time.time())


@pytest.fixture(scope="module")
def nras() -> LocalGpuAttestationService:
    return LocalGpuAttestationService()


def _verify(nras: LocalGpuAttestationService, tokens: Any, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "nonce": NONCE,
        "now_s": NOW,
        "issuer": nras.issuer,
        "log": CheckLog(),
        "expected_gpus": None,
    }
    options.update(kw)
    return verify_gpu_tokens(tokens, parse_jwks(nras.jwks()), **options)


def _rejected(check: str, nras: LocalGpuAttestationService, tokens: Any, **kw: Any) -> str:
    with pytest.raises(AttestationFailed) as info:
        _verify(nras, tokens, **kw)
    assert info.value.check == check, info.value
    return info.value.reason


def _tokens(nras: LocalGpuAttestationService, gpus: int = 2, **kw: Any) -> list[Any]:
    return nras.attest(fake_gpu_evidence(gpus), NONCE.hex(), now_s=NOW, **kw)


def test_valid_tokens_pass(nras: LocalGpuAttestationService) -> None:
    log = CheckLog()
    result = _verify(nras, _tokens(nras), log=log, expected_gpus=2)
    assert [d.name for d in result.devices] == ["GPU-0", "GPU-1"]
    assert result.devices[0].hwmodel
    assert result.expires_at_s == NOW + 3600
    assert {c.name for c in log.checks} >= {"gpu_nonce", "gpu_result", "gpu_signature"}


def test_bare_overall_token_passes(nras: LocalGpuAttestationService) -> None:
    assert _verify(nras, _tokens(nras)[0][1]).devices == ()


def test_bad_signature_is_refused(nras: LocalGpuAttestationService) -> None:
    impostor_key = ec.generate_private_key(ec.SECP384R1())
    claims = jwt.decode(_tokens(nras)[0][1], options={"verify_signature": False})
    forged = jwt.encode(claims, impostor_key, algorithm="ES384", headers={"kid": nras.kid})
    _rejected("gpu_signature", nras, forged)


def test_tampered_payload_is_refused(nras: LocalGpuAttestationService) -> None:
    header, payload, signature = _tokens(nras)[0][1].split(".")
    tampered = f"{header}.{payload[:-4]}AAAA.{signature}"
    _rejected("gpu_signature", nras, tampered)


def test_unknown_kid_is_refused(nras: LocalGpuAttestationService) -> None:
    other = LocalGpuAttestationService()
    _rejected("gpu_signature", nras, other.attest([], NONCE.hex(), now_s=NOW))


@pytest.mark.parametrize("alg", ["HS256", "none"])
def test_other_algorithms_are_refused(nras: LocalGpuAttestationService, alg: str) -> None:
    claims = jwt.decode(_tokens(nras)[0][1], options={"verify_signature": False})
    key = "secret-secret-secret-secret-secret" if alg == "HS256" else ""  # "none" signs with no key
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": nras.kid})
    _rejected("gpu_signature", nras, token)


def test_wrong_nonce_is_refused(nras: LocalGpuAttestationService) -> None:
    replayed = nras.attest(fake_gpu_evidence(1), "ff" * 32, now_s=NOW)
    assert "replayed" in _rejected("gpu_nonce", nras, replayed)


def test_failed_overall_result_is_refused(nras: LocalGpuAttestationService) -> None:
    _rejected("gpu_result", nras, _tokens(nras, overall_result=False))


@pytest.mark.parametrize(
    "claims",
    [
        {"measres": "fail"},
        {"dbgstat": "enabled"},
        {"secboot": False},
        {"x-nvidia-gpu-attestation-report-nonce-match": False},
    ],
)
def test_failed_per_gpu_claims_are_refused(
    nras: LocalGpuAttestationService, claims: dict[str, Any]
) -> None:
    reason = _rejected("gpu_result", nras, _tokens(nras, gpu_claims=claims))
    assert next(iter(claims)) in reason


def test_detached_token_not_signed_by_overall_is_refused(nras: LocalGpuAttestationService) -> None:
    overall, detached = _tokens(nras)
    other = _tokens(nras)[1]
    _rejected(
        "gpu_signature", nras, [overall, {"GPU-0": other["GPU-0"], "GPU-1": detached["GPU-1"]}]
    )


def test_dropped_gpu_is_refused(nras: LocalGpuAttestationService) -> None:
    overall, detached = _tokens(nras)
    _rejected("gpu_signature", nras, [overall, {"GPU-0": detached["GPU-0"]}])


def test_gpu_count_must_match_the_evidence(nras: LocalGpuAttestationService) -> None:
    _rejected("gpu_result", nras, _tokens(nras, gpus=1), expected_gpus=2)


def test_expired_token_is_refused(nras: LocalGpuAttestationService) -> None:
    _rejected("gpu_signature", nras, _tokens(nras), now_s=NOW + 3600)


def test_wrong_issuer_is_refused(nras: LocalGpuAttestationService) -> None:
    _rejected("gpu_signature", nras, _tokens(nras), issuer="https://evil.example")


@pytest.mark.parametrize("tokens", [None, 42, [], [["JWS", "x"], {}], ["JWT", "x"], "", "a.b.c"])
def test_malformed_responses_are_refused(nras: LocalGpuAttestationService, tokens: Any) -> None:
    with pytest.raises(AttestationFailed) as info:
        _verify(nras, tokens)
    assert info.value.check in {"gpu_evidence", "gpu_signature"}


def test_parse_jwks_keeps_only_p384_keys(nras: LocalGpuAttestationService) -> None:
    document = nras.jwks()
    document["keys"].append({"kty": "EC", "crv": "P-256", "kid": "p256", "x": "A", "y": "B"})
    document["keys"].append({"kty": "EC", "crv": "P-384", "kid": "broken", "x": "A", "y": "B"})
    assert list(parse_jwks(document)) == [nras.kid]
    with pytest.raises(AttestationFailed):
        parse_jwks({"nokeys": []})


def test_submods_digest_is_sha256_of_the_detached_token(nras: LocalGpuAttestationService) -> None:
    overall, detached = _tokens(nras, gpus=1)
    claims = jwt.decode(overall[1], options={"verify_signature": False})
    digest = hashlib.sha256(detached["GPU-0"].encode()).hexdigest()
    assert claims["submods"]["GPU-0"] == ["DIGEST", ["SHA-256", digest]]
