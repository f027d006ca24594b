"""Client-side verification of a receipt: what `teegate verify` runs, as a Python API.

It takes nothing on the gateway's word. Given a signed receipt (by id from the
gateway, or a file) it checks, step by step:

1. `signature`: the receipt's audit path leads from its leaf (its RFC 8785 encoding)
   to the root of its batch, and the Ed25519 signature over that batch's head (root
   and size) verifies; a receipt from before batches, over its encoding alone.
2. `key`: the signing key is one the client trusts: pinned (`--key`, or kept in the
   state file from an earlier run the user pinned it in).
3. `request` / `response`: the bytes the client sent and received hash to what the
   receipt says (when the client gives them).
4. `tree_head`: the log's signed tree head is signed by a trusted key.
5. `verdict_inclusion`: the verdict the receipt names is, byte for byte, the leaf at
   its index, and that leaf is in the tree under the head (RFC 9162 audit path).
6. `key_inclusion`: the receipt key was published in the same log.
7. `consistency`: the head is an append-only extension of the last head this client
   saw of this log (kept in a small state file): a log that rewrote or forked its
   history fails here.
8. `gateway_attestation` (asked for with `gateway=QuoteCheck(...)`): the gateway's
   own TDX quote, for a fresh nonce, verified with dcap-qvl, binds its receipt key; a
   key bound so passes step 2 without being pinned (and is pinned from then on).
9. `upstream_quote` (asked for with `upstream=QuoteCheck(...)`): the quote behind the
   receipt's verdict, as `GET /v1/attestation/report` serves it while that verdict is
   current, hashes to the receipt's `quote_sha256`, binds the verdict's TLS key, and
   verifies with dcap-qvl here.

Every step must pass for `Report.ok`; steps with nothing to check are `skipped`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from teegate.attestation import (
    AttestationPolicy,
    PccsCollateralProvider,
    gateway_report_data,
    report_data_matches,
    verify_tdx_quote,
)
from teegate.errors import AttestationFailed
from teegate.receipts import (
    TREE_HEAD_CONTEXT,
    canonical,
    key_id,
    leaf_hash,
    unb64,
    verify_consistency,
    verify_inclusion,
    verify_receipt_signature,
    verify_signed,
)

__all__ = [
    "INTEL_PCS",
    "Evidence",
    "QuoteCheck",
    "Report",
    "State",
    "Step",
    "check",
    "fetch_evidence",
    "verify",
]

Outcome = Literal["passed", "failed", "skipped"]
INTEL_PCS = "https://api.trustedservices.intel.com"


@dataclass(frozen=True, slots=True)
class QuoteCheck:
    """How to check a TDX quote: collateral from `pccs_url`, chained to Intel's root
    (or, for the dev stack and tests only, to `root_ca_der`)."""

    pccs_url: str = INTEL_PCS
    root_ca_der: bytes | None = None


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    outcome: Outcome
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"step": self.name, "outcome": self.outcome, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Report:
    receipt_id: str | None
    steps: tuple[Step, ...]

    @property
    def ok(self) -> bool:
        return all(step.outcome != "failed" for step in self.steps)

    def failed(self) -> list[str]:
        return [step.name for step in self.steps if step.outcome == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "receipt": self.receipt_id,
            "ok": self.ok,
            "steps": [step.to_json() for step in self.steps],
        }


@dataclass(slots=True)
class Evidence:
    """What one verification reads: the receipt and what the log says about it."""

    receipt: dict[str, Any]
    tree_head: dict[str, Any]
    verdict_leaf: bytes | None = None
    verdict_proof: list[str] | None = None
    key_leaf: bytes | None = None
    key_proof: list[str] | None = None
    consistency: list[str] | None = None
    """From the state file's last head of this log to `tree_head` (None: no earlier head)."""
    gateway: Step | None = None
    """The gateway's own quote, checked (None: not asked)."""
    attested_key: str | None = None
    """The receipt key (base64) that quote binds, if it passed."""
    upstream: Step | None = None
    """The upstream's quote, re-verified here (None: not asked)."""


@dataclass(slots=True)
class State:
    """What a client keeps between runs: its pinned keys, and per log the last head."""

    keys: dict[str, str] = field(default_factory=dict)
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(dict(data.get("keys", {})), dict(data.get("heads", {})))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"keys": self.keys, "heads": self.heads}, indent=2))
        temporary.replace(path)

    def pin(self, public_keys: Iterable[str]) -> None:
        for public in public_keys:
            self.keys[key_id(unb64(public))] = public

    def last_head(self, log_id: str | None) -> dict[str, Any] | None:
        return self.heads.get(log_id) if log_id is not None else None


def check(
    evidence: Evidence,
    state: State,
    *,
    request: bytes | None = None,
    response: bytes | None = None,
) -> Report:
    """Run every step over `evidence` (no I/O). On success the caller may record the
    head in `state` (`verify` does)."""
    body = _object(evidence.receipt.get("receipt"))
    signature = _object(evidence.receipt.get("signature"))
    steps: list[Step] = []
    public = _receipt_key(evidence, signature.get("key_id"), state)
    steps.append(_receipt_signature_step(public, body, signature))
    steps.append(_key_step(signature.get("key_id"), state, evidence.attested_key))
    steps.append(_hash_step("request", request, body.get("request_sha256")))
    steps.append(_hash_step("response", response, body.get("response_sha256")))
    head = _object(evidence.tree_head.get("tree_head"))
    head_signature = _object(evidence.tree_head.get("signature"))
    head_key = _trusted(state, evidence.attested_key).get(str(head_signature.get("key_id")))
    if head_key is None:
        steps.append(Step("tree_head", "failed", "the tree head is signed by a key not pinned"))
    else:
        steps.append(_tree_head_step(unb64(head_key), head, head_signature))
    steps.append(
        _inclusion_step(
            "verdict_inclusion",
            claimed=body.get("verdict"),
            index=body.get("verdict_leaf_index"),
            leaf=evidence.verdict_leaf,
            proof=evidence.verdict_proof,
            head=head,
        )
    )
    key_entry = _object(body.get("key"))
    steps.append(
        _inclusion_step(
            "key_inclusion",
            claimed=_key_leaf_object(evidence.key_leaf, signature.get("key_id")),
            index=key_entry.get("leaf_index"),
            leaf=evidence.key_leaf,
            proof=evidence.key_proof,
            head=head,
        )
    )
    steps.append(_consistency_step(state.last_head(head.get("log_id")), head, evidence.consistency))
    steps.append(
        evidence.gateway
        or Step("gateway_attestation", "skipped", "not asked for (--attest-gateway)")
    )
    steps.append(
        evidence.upstream or Step("upstream_quote", "skipped", "not asked for (--recheck-upstream)")
    )
    return Report(body.get("id") if isinstance(body.get("id"), str) else None, tuple(steps))


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _trusted(state: State, attested: str | None) -> dict[str, str]:
    keys = dict(state.keys)
    if attested is not None:
        keys[key_id(unb64(attested))] = attested
    return keys


def _receipt_key(evidence: Evidence, kid: object, state: State) -> bytes | None:
    """The receipt key's public bytes: pinned or attested, or as the log publishes it."""
    pinned = _trusted(state, evidence.attested_key).get(str(kid))
    if pinned is not None:
        return unb64(pinned)
    leaf = _key_leaf_object(evidence.key_leaf, kid)
    return unb64(leaf["public_key"]) if leaf is not None else None


def _key_leaf_object(data: bytes | None, kid: object) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        leaf = json.loads(data)
    except ValueError:
        return None
    if not isinstance(leaf, dict) or leaf.get("key_id") != kid:
        return None
    return leaf


def _signature_step(
    name: str,
    public: bytes | None,
    signature: Mapping[str, Any],
    valid: Callable[[bytes], bool],
    what: str = "",
) -> Step:
    """`valid(public)` checks the signature; `what` says what it was over, if not plain."""
    kid = signature.get("key_id")
    if public is None:
        return Step(name, "failed", f"key {kid} is not known")
    try:
        ok = valid(public)
    except (TypeError, ValueError) as exc:
        return Step(name, "failed", f"cannot be encoded canonically: {exc}")
    if not ok:
        return Step(name, "failed", f"the Ed25519 signature by {kid} is bad")
    return Step(name, "passed", f"Ed25519 signature by key {kid}{what}")


def _receipt_signature_step(
    public: bytes | None, body: Mapping[str, Any], signature: Mapping[str, Any]
) -> Step:
    batch = _object(signature.get("batch"))
    what = (
        f" over its batch (leaf {batch.get('leaf_index')} of {batch.get('tree_size')})"
        if batch
        else " (v1, this receipt alone)"
    )
    return _signature_step(
        "signature",
        public,
        signature,
        lambda key: verify_receipt_signature(key, body, signature),
        what,
    )


def _tree_head_step(public: bytes, head: Mapping[str, Any], signature: Mapping[str, Any]) -> Step:
    return _signature_step(
        "tree_head",
        public,
        signature,
        lambda key: verify_signed(key, TREE_HEAD_CONTEXT, head, signature),
    )


def _key_step(kid: object, state: State, attested: str | None) -> Step:
    if str(kid) in state.keys:
        return Step("key", "passed", f"key {kid} is pinned")
    if attested is not None and key_id(unb64(attested)) == kid:
        return Step("key", "passed", f"key {kid} is bound by the gateway's TDX quote")
    return Step(
        "key",
        "failed",
        f"key {kid} is neither pinned nor bound by the gateway's attestation: pin the "
        "gateway's receipt key (--key), or check its quote (--attest-gateway)",
    )


def _hash_step(name: str, data: bytes | None, expected: object) -> Step:
    if data is None:
        return Step(name, "skipped", f"no {name} bytes given")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        return Step(
            name, "failed", f"SHA-256 of the {name} is {actual}, the receipt says {expected}"
        )
    return Step(name, "passed", f"SHA-256 {actual} matches")


def _inclusion_step(
    name: str,
    *,
    claimed: object,
    index: object,
    leaf: bytes | None,
    proof: list[str] | None,
    head: Mapping[str, Any],
) -> Step:
    if claimed is None and index is None:
        return Step(name, "skipped", "the receipt names no leaf (a provider-asserted upstream)")
    if leaf is None or proof is None or not isinstance(index, int):
        return Step(name, "failed", "the leaf or its proof is missing")
    if not isinstance(claimed, dict) or canonical(claimed) != leaf:
        return Step(name, "failed", f"leaf {index} is not what the receipt states")
    size, root_hash = head.get("tree_size"), head.get("root_hash")
    try:
        path = [unb64(p) for p in proof]
        included = (
            isinstance(size, int)
            and isinstance(root_hash, str)
            and verify_inclusion(leaf_hash(leaf), index, size, path, unb64(root_hash))
        )
    except ValueError:
        included = False
    if not included:
        return Step(name, "failed", f"leaf {index}'s audit path does not lead to the tree head")
    return Step(name, "passed", f"leaf {index} is in the tree of size {size}")


def _consistency_step(
    previous: Mapping[str, Any] | None, head: Mapping[str, Any], proof: list[str] | None
) -> Step:
    if previous is None:
        return Step("consistency", "skipped", "no earlier head of this log in the state file")
    before = _object(previous.get("tree_head"))
    first, second = before.get("tree_size"), head.get("tree_size")
    if not isinstance(first, int) or not isinstance(second, int):
        return Step("consistency", "failed", "a tree head has no size")
    if first > second:
        return Step(
            "consistency", "failed", f"the log shrank: {first} leaves seen before, {second} now"
        )
    try:
        consistent = proof is not None and verify_consistency(
            first,
            second,
            unb64(str(before.get("root_hash"))),
            unb64(str(head.get("root_hash"))),
            [unb64(p) for p in proof],
        )
    except ValueError:
        consistent = False
    if not consistent:
        return Step(
            "consistency",
            "failed",
            f"the head of size {second} does not extend the head of size {first} seen "
            "before: the log was rewritten or forked",
        )
    return Step("consistency", "passed", f"size {second} extends size {first} seen before")


def fetch_evidence(
    client: httpx.Client,
    receipt: dict[str, Any],
    state: State,
    gateway: QuoteCheck | None = None,
    *,
    upstream: QuoteCheck | None = None,
    api_key: str | None = None,
) -> Evidence:
    """Ask the gateway's transparency log for everything `check` reads (and, if
    `gateway` says how, for its own quote, checked here: it needs a fresh nonce)."""
    head = _get(client, "/v1/transparency/sth")
    size = head["tree_head"]["tree_size"]
    body = _object(receipt.get("receipt"))
    evidence = Evidence(receipt, head)
    verdict_index = body.get("verdict_leaf_index")
    if isinstance(verdict_index, int) and 0 <= verdict_index < size:
        evidence.verdict_leaf, evidence.verdict_proof = _leaf(client, verdict_index, size)
    key_index = _object(body.get("key")).get("leaf_index")
    if isinstance(key_index, int) and 0 <= key_index < size:
        evidence.key_leaf, evidence.key_proof = _leaf(client, key_index, size)
    previous = state.last_head(head["tree_head"].get("log_id"))
    if previous is not None:
        first = previous["tree_head"]["tree_size"]
        if first <= size:
            proof = _get(client, "/v1/transparency/consistency", **{"from": first, "to": size})
            evidence.consistency = list(proof["proof"])
    if gateway is not None:
        evidence.gateway, evidence.attested_key = _attest_gateway(client, gateway)
    if upstream is not None:
        evidence.upstream = _recheck_upstream(client, body, upstream, api_key)
    return evidence


def _recheck_upstream(
    client: httpx.Client, body: Mapping[str, Any], how: QuoteCheck, api_key: str | None
) -> Step:
    verdict = _object(body.get("verdict"))
    served = _served_evidence(client, body, verdict, api_key)
    if isinstance(served, Step):
        return served
    quote = unb64(str(served["quote"]))
    expected = bytes.fromhex(str(served.get("expected_report_data")))
    spki = verdict.get("tls_spki_sha256")
    if hashlib.sha256(quote).hexdigest() != verdict.get("quote_sha256"):
        return Step("upstream_quote", "failed", "the quote served is not the one the receipt names")
    if spki is not None and expected[:32].hex() != spki:
        return Step("upstream_quote", "failed", "the quote does not bind the verdict's TLS key")
    try:
        result = asyncio.run(_verify_quote(quote, expected, how))
    except AttestationFailed as failure:
        return Step("upstream_quote", "failed", f"{failure.check}: {failure.reason}")
    return Step(
        "upstream_quote",
        "passed",
        f"the upstream's TDX quote ({result.tcb_status}) verifies and binds its TLS key",
    )


def _served_evidence(
    client: httpx.Client,
    body: Mapping[str, Any],
    verdict: Mapping[str, Any],
    api_key: str | None,
) -> dict[str, Any] | Step:
    """The evidence `GET /v1/attestation/report` serves for the receipt's verdict."""
    if not verdict:
        return Step("upstream_quote", "failed", "the receipt names no verdict to re-check")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = client.get(
        "/v1/attestation/report", params={"model": str(body.get("model"))}, headers=headers
    )
    if response.status_code != 200:
        return Step("upstream_quote", "failed", _error_message(response))
    served = [
        _object(v.get("evidence"))
        for upstream in response.json().get("upstreams", [])
        for v in upstream.get("verdicts", [])
        if v.get("id") == verdict.get("id")
    ]
    if not served or not served[0].get("quote"):
        return Step(
            "upstream_quote",
            "failed",
            f"verdict {verdict.get('id')} is no longer current: its quote is not served now",
        )
    return served[0]


def _attest_gateway(client: httpx.Client, how: QuoteCheck) -> tuple[Step, str | None]:
    nonce = secrets.token_bytes(32)
    response = client.get("/v1/attestation/gateway", params={"nonce": nonce.hex()})
    if response.status_code != 200:
        return Step("gateway_attestation", "failed", _error_message(response)), None
    data = response.json()
    public = str(data["receipt_key"]["public_key"])
    quote = unb64(str(data["quote"]))
    expected = gateway_report_data(unb64(public), nonce)
    try:
        result = asyncio.run(_verify_quote(quote, expected, how))
    except AttestationFailed as failure:
        return Step("gateway_attestation", "failed", f"{failure.check}: {failure.reason}"), None
    if not report_data_matches(result.quote.report_data, expected):
        return Step("gateway_attestation", "failed", "the quote does not bind this key"), None
    root = "Intel's root" if how.root_ca_der is None else "a configured (dev) root"
    detail = (
        f"TDX quote ({result.tcb_status}, chained to {root}) binds receipt key "
        f"{key_id(unb64(public))} and this nonce"
    )
    return Step("gateway_attestation", "passed", detail), public


async def _verify_quote(quote: bytes, expected: bytes, how: QuoteCheck) -> Any:
    now = int(time.time())
    collateral = await PccsCollateralProvider(how.pccs_url).collateral_for(quote, now)
    return verify_tdx_quote(
        quote,
        collateral,
        expected_report_data=expected,
        policy=AttestationPolicy(require_gpu=False),
        now_s=now,
        root_ca_der=how.root_ca_der,
    )


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _leaf(client: httpx.Client, index: int, size: int) -> tuple[bytes, list[str]]:
    leaves = _get(client, "/v1/transparency/leaves", start=index, end=index + 1)
    proof = _get(client, "/v1/transparency/proof", leaf=index, tree_size=size)
    return unb64(leaves["leaves"][0]["data"]), list(proof["audit_path"])


def _get(client: httpx.Client, path: str, **params: object) -> dict[str, Any]:
    response = client.get(path, params={k: str(v) for k, v in params.items()})
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def verify(
    receipt: str | Path | dict[str, Any],
    *,
    base_url: str,
    api_key: str | None = None,
    state_file: Path,
    pin: Iterable[str] = (),
    request: bytes | None = None,
    response: bytes | None = None,
    gateway: QuoteCheck | None = None,
    upstream: QuoteCheck | None = None,
    client: httpx.Client | None = None,
) -> Report:
    """Verify a receipt (its id, a file holding it, or the object) against the gateway
    at `base_url` (the address before `/v1`). Keys in `pin` (base64 Ed25519 public keys)
    are added to the state's pinned keys; `gateway` asks for the gateway's own quote,
    `upstream` re-verifies the upstream's (`api_key` reads its report). The
    head (and an attested key) is recorded only if every step passed."""
    state = State.load(state_file)
    state.pin(pin)
    owned = client is None
    http = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=30)
    try:
        signed = _load_receipt(http, receipt, api_key)
        evidence = fetch_evidence(http, signed, state, gateway, upstream=upstream, api_key=api_key)
    finally:
        if owned:
            http.close()
    report = check(evidence, state, request=request, response=response)
    if report.ok:
        log_id = evidence.tree_head["tree_head"].get("log_id")
        if log_id is not None:
            state.heads[log_id] = evidence.tree_head
        if evidence.attested_key is not None:
            state.pin([evidence.attested_key])
        state.save(state_file)
    return report


def _load_receipt(
    client: httpx.Client, receipt: str | Path | dict[str, Any], api_key: str | None
) -> dict[str, Any]:
    if isinstance(receipt, dict):
        return receipt
    if isinstance(receipt, Path) or not str(receipt).startswith("rcpt_"):
        data: dict[str, Any] = json.loads(Path(receipt).read_bytes())
        return data
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = client.get(f"/v1/receipts/{receipt}", headers=headers)
    response.raise_for_status()
    fetched: dict[str, Any] = response.json()
    return fetched
