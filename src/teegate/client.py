"""The verifying client: an `openai.OpenAI` whose every request is end-to-end encrypted
to an enclave it has verified itself, so the gateway in between cannot read it.

    import teegate.client
    client = teegate.client.connect("https://gw.example/v1", key, model="org/Model-TEE")
    client.chat.completions.create(model="org/Model-TEE", messages=[...])

`connect` fetches `GET /v1/attestation/report?model=&nonce=` with a fresh nonce,
verifies the enclave's TDX quote here (dcap-qvl against Intel's root, or the
policy's dev root; TCB status and measurements by the policy; report_data binding
the nonce, the enclave's TLS key, its HPKE key and its usage key: the E2EE layout
of docs/e2ee.md), and only then builds the client, on `tinfoil-ehbp`'s transport
encrypting to that HPKE key. A failed check raises `EnclaveNotVerified` before
any request is sent. Each chat request gets the clear headers the gateway bills
by (`X-TEE-Model`, `X-TEE-Max-Output-Tokens`), read from the request itself.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import openai
from ehbp import AsyncEHBPTransport, EHBPTransport, ServerIdentity

from teegate.attestation import (
    AttestationPolicy,
    Collateral,
    E2eeKeys,
    TdxVerification,
    e2ee_report_data,
    verify_tdx_quote,
)
from teegate.errors import AttestationFailed, EnclaveNotVerified

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "EnclaveNotVerified",
    "VerifiedEnclave",
    "VerifyPolicy",
    "connect",
    "connect_async",
    "verify_enclave",
]

DEFAULT_MAX_OUTPUT_TOKENS = 1024
"""The output ceiling of a request that sets no max_tokens (the gateway's default)."""
MODEL_HEADER = "X-TEE-Model"
MAX_OUTPUT_TOKENS_HEADER = "X-TEE-Max-Output-Tokens"
_CHAT_PATH = "/chat/completions"


@dataclass(frozen=True)
class VerifyPolicy:
    """What the client accepts. `root_ca_der` None is Intel's SGX root (production);
    a DER root is for `teegate dev` and tests (its `devstack-tls/root-ca.der`)."""

    attestation: AttestationPolicy = field(
        default_factory=lambda: AttestationPolicy(require_gpu=False)
    )
    root_ca_der: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VerifiedEnclave:
    """What the client verified: the keys its requests are encrypted to and billed by."""

    model: str
    keys: E2eeKeys = field(repr=False)
    tdx: TdxVerification = field(repr=False)

    def identity(self) -> ServerIdentity:
        return ServerIdentity.unmarshal_public_config(self.keys.hpke_key_config)


def verify_enclave(
    base_url: str,
    api_key: str,
    model: str,
    policy: VerifyPolicy | None = None,
    *,
    http: httpx.Client | None = None,
) -> VerifiedEnclave:
    """Fetch the model's attestation report for a fresh nonce and verify it here."""
    nonce = secrets.token_bytes(32)
    owned = http is None
    client = http or httpx.Client(timeout=30)
    try:
        response = client.get(
            f"{base_url.rstrip('/')}/attestation/report",
            params={"model": model, "nonce": nonce.hex()},
            headers={"Authorization": f"Bearer {api_key}"},
        )
    finally:
        if owned:
            client.close()
    if response.status_code != 200:
        raise EnclaveNotVerified(f"the attestation report answered HTTP {response.status_code}")
    return _verify_report(response.json(), model, nonce, policy or VerifyPolicy())


def connect(
    base_url: str,
    api_key: str,
    *,
    model: str,
    policy: VerifyPolicy | None = None,
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    **openai_options: Any,
) -> openai.OpenAI:
    """An `openai.OpenAI` that encrypts every request to `model`'s verified enclave."""
    enclave = verify_enclave(base_url, api_key, model, policy)
    transport = _ClearHeaders(EHBPTransport(enclave.identity()), model, max_output_tokens)
    http = httpx.Client(transport=transport, timeout=openai_options.pop("timeout", 600))
    # The SDK's annotation names its vendored httpx; it takes an httpx.Client as is.
    return openai.OpenAI(
        base_url=base_url, api_key=api_key, http_client=cast(Any, http), **openai_options
    )


def connect_async(
    base_url: str,
    api_key: str,
    *,
    model: str,
    policy: VerifyPolicy | None = None,
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    **openai_options: Any,
) -> openai.AsyncOpenAI:
    """`connect`, for `AsyncOpenAI` (the verification itself runs before it returns)."""
    enclave = verify_enclave(base_url, api_key, model, policy)
    transport = _AsyncClearHeaders(AsyncEHBPTransport(enclave.identity()), model, max_output_tokens)
    http = httpx.AsyncClient(transport=transport, timeout=openai_options.pop("timeout", 600))
    return openai.AsyncOpenAI(
        base_url=base_url, api_key=api_key, http_client=cast(Any, http), **openai_options
    )


def _verify_report(report: Any, model: str, nonce: bytes, policy: VerifyPolicy) -> VerifiedEnclave:
    failures = []
    for upstream in _list(report, "upstreams"):
        for verdict in _list(upstream, "verdicts"):
            try:
                return _verify_verdict(verdict, model, nonce, policy)
            except (AttestationFailed, KeyError, TypeError, ValueError) as exc:
                failures.append(str(exc))
    reason = "; ".join(failures) or "the report has no verdict with end-to-end encryption keys"
    raise EnclaveNotVerified(f"'{model}': {reason}")


def _verify_verdict(
    verdict: Mapping[str, Any], model: str, nonce: bytes, policy: VerifyPolicy
) -> VerifiedEnclave:
    evidence = verdict["evidence"]
    if evidence["nonce"] != nonce.hex():
        raise ValueError("the evidence is not for this client's nonce")
    if not evidence.get("hpke_key_config"):
        raise ValueError("the enclave offers no end-to-end encryption key")
    keys = E2eeKeys(
        bytes.fromhex(evidence["hpke_key_config"]), bytes.fromhex(evidence["usage_key"])
    )
    expected = e2ee_report_data(bytes.fromhex(evidence["tls_spki_sha256"]), keys, nonce)
    collateral = evidence["collateral"]
    tdx = verify_tdx_quote(
        _quote(evidence["quote"]),
        Collateral.from_json(json.dumps(collateral["collateral"]), source=collateral["source"]),
        expected_report_data=expected,
        policy=policy.attestation,
        now_s=int(time.time()),
        root_ca_der=policy.root_ca_der,
    )
    return VerifiedEnclave(model, keys, tdx)


def _quote(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _list(value: Any, key: str) -> list[Any]:
    items = value.get(key) if isinstance(value, Mapping) else None
    return items if isinstance(items, list) else []


def _clear_headers(request: httpx.Request, model: str, default_ceiling: int) -> httpx.Request:
    """The chat request with the clear headers the gateway gates and bills by, read
    from its own (still plaintext) body; a request for another model is refused."""
    if request.method != "POST" or not request.url.path.endswith(_CHAT_PATH):
        return request
    body = json.loads(request.content)
    if body.get("model") != model:
        raise EnclaveNotVerified(
            f"this client verified the enclave of '{model}' only, not '{body.get('model')}'"
        )
    asked = body.get("max_completion_tokens") or body.get("max_tokens") or default_ceiling
    ceiling = int(asked) * int(body.get("n") or 1)
    headers = httpx.Headers(request.headers)
    headers[MODEL_HEADER] = model
    headers[MAX_OUTPUT_TOKENS_HEADER] = str(ceiling)
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        content=request.content,
        extensions=request.extensions,
    )


class _ClearHeaders(httpx.BaseTransport):
    def __init__(self, inner: EHBPTransport, model: str, ceiling: int) -> None:
        self._inner, self._model, self._ceiling = inner, model, ceiling

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        return self._inner.handle_request(_clear_headers(request, self._model, self._ceiling))

    def close(self) -> None:
        self._inner.close()


class _AsyncClearHeaders(httpx.AsyncBaseTransport):
    def __init__(self, inner: AsyncEHBPTransport, model: str, ceiling: int) -> None:
        self._inner, self._model, self._ceiling = inner, model, ceiling

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await self._inner.handle_async_request(
            _clear_headers(request, self._model, self._ceiling)
        )

    async def aclose(self) -> None:
        await self._inner.aclose()
