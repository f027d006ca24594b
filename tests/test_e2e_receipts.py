"""Signed receipts end to end: the official SDK makes a completion, the gateway signs
what it served and charged, and `teegate.verify` checks it against the transparency
log; one flipped byte anywhere fails the step it belongs to."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from openai.types.chat import ChatCompletionMessageParam
from typer.testing import CliRunner

from teegate.app import create_app
from teegate.billing import usd_to_nano
from teegate.cli import app as cli_app
from teegate.devstack import SimulatedEnclave, SimulatedTsm
from teegate.receipts import (
    EAR_PROFILE,
    RECEIPT_V1_CONTEXT,
    TREE_HEAD_CONTEXT,
    SigningKey,
    b64,
    canonical,
    consistency_proof,
    leaf_hash,
    root,
    sign_batch,
    unb64,
)
from teegate.verify import (
    Evidence,
    QuoteCheck,
    Report,
    State,
    check,
    fetch_evidence,
    verify,
)
from tests.support.billing import ENGINES, database_url, settled_books
from tests.support.gateway import (
    Devstack,
    Gateway,
    dev_attestation,
    gateway_settings,
    prepare_database,
    running_gateway,
)
from tests.support.servers import serving

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, how are you?"}]


@dataclass
class Served:
    """One completion as the client saw it: the exact bytes each way, and its ids."""

    request: bytes
    response: bytes
    receipt_id: str
    request_id: str


@pytest.fixture(scope="module")
def rig(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave: SimulatedEnclave,
    enclave_files: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """A gateway that attests itself through a simulated configfs-tsm (test PKI)."""
    directory = tmp_path_factory.mktemp("receipts")
    settings = gateway_settings(
        directory,
        devstack.url,
        attestation=dev_attestation(attestation_services.url, enclave_files / "root-ca.der"),
        tsm_report_dir=directory / "tsm",
    )
    with SimulatedTsm(directory / "tsm", enclave.pki), running_gateway(settings, "receipts") as gw:
        yield gw


@pytest.fixture
def attested(attestation_services: Devstack, enclave: SimulatedEnclave) -> QuoteCheck:
    """Check the gateway's quote as a client would, against the test PKI's root."""
    return QuoteCheck(attestation_services.url, enclave.root_ca_der)


def complete(gateway: Gateway, *, stream: bool = False) -> Served:
    """A completion through the official SDK; its request bytes caught on the wire."""
    sent: list[bytes] = []

    def record(request: httpx.Request) -> None:
        sent.append(request.read())

    http = httpx.Client(event_hooks={"request": [record]})
    client = gateway.client(http_client=http)
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=V3,
            messages=HELLO,
            max_tokens=20,
            stream=True,
        ) as raw:
            body = b"".join(raw.http_response.iter_bytes())
            headers = raw.http_response.headers
    else:
        whole = client.chat.completions.with_raw_response.create(
            model=V3,
            messages=HELLO,
            max_tokens=20,
        )
        body, headers = whole.http_response.content, whole.http_response.headers
    http.close()
    return Served(sent[0], body, headers["x-tee-receipt"], headers["x-request-id"])


def receipt_of(gateway: Gateway, receipt_id: str, key: str | None = None) -> dict[str, Any]:
    """Waits for it: a receipt is stored just after its answer is settled."""
    deadline = time.monotonic() + 5
    while True:
        response = httpx.get(
            f"{gateway.url}/v1/receipts/{receipt_id}",
            headers={"Authorization": f"Bearer {key or gateway.key}"},
        )
        if response.status_code == 200:
            found: dict[str, Any] = response.json()
            return found
        assert response.status_code == 404, response.text
        assert time.monotonic() < deadline, f"{receipt_id} was never stored"
        time.sleep(0.02)


def published_key(gateway: Gateway, receipt: dict[str, Any]) -> str:
    """The receipt key as the log publishes it: what a client pins once."""
    index = receipt["receipt"]["key"]["leaf_index"]
    leaves = httpx.get(
        f"{gateway.url}/v1/transparency/leaves", params={"start": index, "end": index + 1}
    ).json()
    public: str = leaves["leaves"][0]["entry"]["public_key"]
    return public


def evidence_for(
    gateway: Gateway,
    receipt: dict[str, Any],
    state: State,
    attested: QuoteCheck | None = None,
) -> Evidence:
    with httpx.Client(base_url=gateway.url) as client:
        return fetch_evidence(client, receipt, state, attested)


def flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def flip_b64(text: str) -> str:
    return b64(flip(unb64(text)))


def outcomes(report: Report) -> dict[str, str]:
    return {step.name: step.outcome for step in report.steps}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_receipt_from_a_real_completion_verifies(
    rig: Gateway, tmp_path: Path, stream: bool
) -> None:
    served = complete(rig, stream=stream)
    receipt = receipt_of(rig, served.receipt_id)
    body = receipt["receipt"]
    assert body["id"] == served.receipt_id
    assert body["request_id"] == served.request_id
    assert body["request_sha256"] == hashlib.sha256(served.request).hexdigest()
    assert body["response_sha256"] == hashlib.sha256(served.response).hexdigest()
    assert body["stream"] is stream and body["model"] == V3 and body["upstream"] == "devstack"
    assert body["verdict"]["type"] == "verdict" and body["verdict"]["passed"] is True
    assert body["verdict"]["quote_sha256"] and body["verdict"]["tcb_status"] == "UpToDate"
    assert body["channel"]["binding"] == "pinned"
    assert body["account"].startswith("acct_") and "receipts" not in json.dumps(body)
    assert body["version"] == 2
    batch = receipt["signature"]["batch"]
    assert 0 <= batch["leaf_index"] < batch["tree_size"]
    state = tmp_path / "state.json"
    key = published_key(rig, receipt)
    report = verify(
        served.receipt_id,
        base_url=rig.url,
        api_key=rig.key,
        state_file=state,
        pin=[key],
        request=served.request,
        response=served.response,
    )
    assert report.ok, report.to_json()
    assert outcomes(report) == {
        "signature": "passed",
        "key": "passed",
        "request": "passed",
        "response": "passed",
        "tree_head": "passed",
        "verdict_inclusion": "passed",
        "key_inclusion": "passed",
        "consistency": "skipped",  # the first head this client has seen
        "gateway_attestation": "skipped",  # the key was pinned instead
        "upstream_quote": "skipped",
    }
    again = verify(served.receipt_id, base_url=rig.url, api_key=rig.key, state_file=state)
    assert again.ok and outcomes(again)["consistency"] == "passed"


def test_the_receipt_cost_is_the_ledger_debit(rig: Gateway) -> None:
    before = settled_books(rig.settings.resolved_database_url, rig.account)
    served = complete(rig)
    receipt = receipt_of(rig, served.receipt_id)["receipt"]
    after = settled_books(rig.settings.resolved_database_url, rig.account)
    assert receipt["cost_nano_usd"] > 0
    assert receipt["cost_nano_usd"] == after.debits_nano - before.debits_nano
    generation = httpx.get(
        f"{rig.url}/v1/generation",
        params={"id": served.request_id},
        headers={"Authorization": f"Bearer {rig.key}"},
    ).json()["data"]
    assert usd_to_nano(generation["total_cost"]) == receipt["cost_nano_usd"]
    assert receipt["billed"]["settled_by"] == "usage"
    assert receipt["usage"] == {
        "prompt_tokens": generation["tokens_prompt"],
        "completion_tokens": generation["tokens_completion"],
    }


def test_a_receipt_is_answered_to_its_owner_only(rig: Gateway) -> None:
    served = complete(rig)
    receipt_of(rig, served.receipt_id)
    other = rig.issue_key(_other_account(rig))
    response = httpx.get(
        f"{rig.url}/v1/receipts/{served.receipt_id}",
        headers={"Authorization": f"Bearer {other}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    unauthenticated = httpx.get(f"{rig.url}/v1/receipts/{served.receipt_id}")
    assert unauthenticated.status_code == 401


def _other_account(gateway: Gateway) -> str:
    from tests.support.gateway import with_store

    async def create(store: Any) -> str:
        await store.create_account("someone-else")
        return "someone-else"

    return with_store(gateway.settings, create)


@pytest.fixture
def verified(rig: Gateway) -> tuple[Served, dict[str, Any], State]:
    served = complete(rig)
    receipt = receipt_of(rig, served.receipt_id)
    state = State()
    state.pin([published_key(rig, receipt)])
    return served, receipt, state


def test_one_flipped_byte_fails_the_step_it_belongs_to(
    rig: Gateway, verified: tuple[Served, dict[str, Any], State]
) -> None:
    served, receipt, state = verified
    evidence = evidence_for(rig, receipt, state)
    clean = check(evidence, state, request=served.request, response=served.response)
    assert clean.ok, clean.to_json()

    response = check(evidence, state, response=flip(served.response, len(served.response) // 2))
    assert response.failed() == ["response"]

    tampered = copy.deepcopy(evidence)
    tampered.receipt["receipt"]["cost_nano_usd"] -= 1
    assert check(tampered, state).failed() == ["signature"]

    for member in ("leaf_index", "tree_size"):
        tampered = copy.deepcopy(evidence)
        tampered.receipt["signature"]["batch"][member] += 1
        assert check(tampered, state).failed() == ["signature"]

    tampered = copy.deepcopy(evidence)
    assert tampered.verdict_proof
    tampered.verdict_proof[0] = flip_b64(tampered.verdict_proof[0])
    assert check(tampered, state).failed() == ["verdict_inclusion"]

    tampered = copy.deepcopy(evidence)
    tampered.tree_head["tree_head"]["root_hash"] = flip_b64(
        tampered.tree_head["tree_head"]["root_hash"]
    )
    failed = check(tampered, state).failed()
    assert failed[0] == "tree_head" and "verdict_inclusion" in failed

    tampered = copy.deepcopy(evidence)
    assert tampered.verdict_leaf is not None
    tampered.verdict_leaf = flip(tampered.verdict_leaf, 10)
    assert check(tampered, state).failed() == ["verdict_inclusion"]


def test_a_receipt_signed_by_a_key_not_bound_to_the_gateway_is_refused(
    rig: Gateway, verified: tuple[Served, dict[str, Any], State]
) -> None:
    _, receipt, state = verified
    forger = SigningKey.generate(0)
    forged = copy.deepcopy(receipt)
    forged["receipt"]["key"]["id"] = forger.id
    (forged["signature"],) = sign_batch(forger, [canonical(forged["receipt"])])
    report = check(evidence_for(rig, forged, state), state)
    assert "key" in report.failed() and "signature" in report.failed()
    state.pin([b64(forger.public)])  # signed by the forger, and pinned: only the log disagrees
    assert check(evidence_for(rig, forged, state), state).failed() == ["key_inclusion"]


def test_a_forked_log_is_detected() -> None:
    """Two heads of one log (same first leaf, same key) that no append-only history joins."""
    key = SigningKey.generate(0)
    state = State()
    state.pin([b64(key.public)])
    common = [leaf_hash(b"key"), leaf_hash(b"verdict 1")]
    seen = [*common, leaf_hash(b"verdict 2")]
    fork = [*common, leaf_hash(b"verdict 2, rewritten"), leaf_hash(b"verdict 3")]

    def head(hashes: list[bytes]) -> dict[str, Any]:
        body = {
            "log_id": b64(hashes[0]),
            "tree_size": len(hashes),
            "root_hash": b64(root(hashes)),
            "timestamp_ms": 1,
        }
        return {"tree_head": body, "signature": key.sign(TREE_HEAD_CONTEXT, body)}

    state.heads[b64(common[0])] = head(seen)
    receipt: dict[str, Any] = {"receipt": {"key": {}}, "signature": {}}
    honest = [*seen, leaf_hash(b"verdict 3")]
    good = Evidence(
        receipt, head(honest), consistency=[b64(h) for h in consistency_proof(3, honest)]
    )
    assert outcomes(check(good, state))["consistency"] == "passed"
    forked = Evidence(receipt, head(fork), consistency=[b64(h) for h in consistency_proof(3, fork)])
    assert outcomes(check(forked, state))["consistency"] == "failed"
    shrunk = Evidence(receipt, head(common), consistency=[])
    assert outcomes(check(shrunk, state))["consistency"] == "failed"


def test_teegate_verify_prints_each_step_and_exits_by_the_result(
    rig: Gateway, verified: tuple[Served, dict[str, Any], State], tmp_path: Path
) -> None:
    served, receipt, state = verified
    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    (tmp_path / "response").write_bytes(served.response)
    (tmp_path / "tampered").write_bytes(flip(served.response))
    (key,) = state.keys.values()
    common = ["--gateway", rig.url, "--key", key, "--state", str(tmp_path / "state.json")]
    runner = CliRunner()
    result = runner.invoke(
        cli_app,
        [
            "verify",
            served.receipt_id,
            "--api-key",
            rig.key,
            "--response",
            str(tmp_path / "response"),
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ok   signature" in result.output and "ok   response" in result.output
    assert result.output.rstrip().endswith("verified")
    result = runner.invoke(
        cli_app,
        [
            "verify",
            str(tmp_path / "receipt.json"),
            "--response",
            str(tmp_path / "tampered"),
            "--json",
            *common,
        ],
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [s["step"] for s in report["steps"] if s["outcome"] == "failed"] == ["response"]


def test_transparency_endpoints_refuse_bad_ranges_with_the_envelope(rig: Gateway) -> None:
    size = httpx.get(f"{rig.url}/v1/transparency/sth").json()["tree_head"]["tree_size"]
    for path, params, param in [
        ("proof", {"leaf": str(size)}, "leaf"),
        ("proof", {}, "leaf"),
        ("proof", {"leaf": "-1"}, "leaf"),
        ("consistency", {"from": "0", "to": str(size + 1)}, "to"),
        ("leaves", {"start": "0", "end": "0"}, "start"),
    ]:
        response = httpx.get(f"{rig.url}/v1/transparency/{path}", params=params)
        assert response.status_code == 400, (path, params)
        assert response.json()["error"]["param"] == param


def tree_head(gateway: Gateway) -> dict[str, Any]:
    head: dict[str, Any] = httpx.get(f"{gateway.url}/v1/transparency/sth").json()["tree_head"]
    return head


def logged_verdicts(gateway: Gateway) -> list[dict[str, Any]]:
    size = tree_head(gateway)["tree_size"]
    page = httpx.get(
        f"{gateway.url}/v1/transparency/leaves", params={"start": 0, "end": size}
    ).json()
    return [leaf["entry"] for leaf in page["leaves"] if leaf["entry"]["type"] == "verdict"]


@pytest.mark.parametrize("engine", ENGINES)
def test_receipts_and_the_log_survive_a_restart_and_agree_across_replicas(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path: Path,
    engine: str,
) -> None:
    with database_url(engine, tmp_path) as url:
        settings = gateway_settings(
            tmp_path,
            devstack.url,
            attestation=dev_attestation(attestation_services.url, enclave_files / "root-ca.der"),
            database_url=url,
            tsm_report_dir=tmp_path / "not-a-tdx-guest",
        )
        key = prepare_database(settings, "replicas")
        state = tmp_path / "state.json"
        with serving(create_app(settings)) as one, serving(create_app(settings)) as two:
            first = Gateway(one.url, settings, key, "replicas")
            second = Gateway(two.url, settings, key, "replicas")
            # each replica attested on its own, and logged its verdict before any request
            assert len(logged_verdicts(first)) >= 2
            served_first = complete(first)
            receipt = receipt_of(second, served_first.receipt_id)  # stored by one, read by two
            pinned = published_key(second, receipt)
            served_second = complete(second)
            receipt_of(first, served_second.receipt_id)
            assert tree_head(first) | {"timestamp_ms": 0} == tree_head(second) | {"timestamp_ms": 0}
            for gateway, served in ((second, served_first), (first, served_second)):
                report = verify(
                    served.receipt_id,
                    base_url=gateway.url,
                    api_key=key,
                    state_file=state,
                    pin=[pinned],
                    response=served.response,
                )
                assert report.ok, report.to_json()
            size_before = tree_head(first)["tree_size"]
            outside = httpx.get(f"{one.url}/v1/attestation/gateway", params={"nonce": "00" * 32})
            assert outside.status_code == 503
            assert outside.json()["error"]["code"] == "not_available"
        with serving(create_app(settings)) as restarted:
            again = Gateway(restarted.url, settings, key, "replicas")
            assert receipt_of(again, served_first.receipt_id) == receipt
            assert tree_head(again)["tree_size"] >= size_before
            report = verify(
                served_first.receipt_id, base_url=again.url, api_key=key, state_file=state
            )
            assert report.ok, report.to_json()
            assert outcomes(report)["consistency"] == "passed"


def test_the_gateway_quote_binds_its_receipt_key_so_nothing_need_be_pinned(
    rig: Gateway, attested: QuoteCheck, tmp_path: Path
) -> None:
    served = complete(rig, stream=True)
    receipt_of(rig, served.receipt_id)
    report = verify(
        served.receipt_id,
        base_url=rig.url,
        api_key=rig.key,
        state_file=tmp_path / "state.json",
        response=served.response,
        gateway=attested,
    )
    assert report.ok, report.to_json()
    steps = {step.name: step for step in report.steps}
    assert steps["gateway_attestation"].outcome == "passed"
    assert "bound by the gateway's TDX quote" in steps["key"].detail
    nonce = "ab" * 32
    evidence = httpx.get(f"{rig.url}/v1/attestation/gateway", params={"nonce": nonce}).json()
    assert evidence["provider"] == "tdx_guest" and evidence["nonce"] == nonce
    assert list(rig.settings.tsm_report_dir.iterdir()) == []  # each request's entry removed


def test_a_receipt_key_the_gateway_quote_does_not_bind_is_refused(
    rig: Gateway, attested: QuoteCheck
) -> None:
    served = complete(rig)
    receipt = receipt_of(rig, served.receipt_id)
    forger = SigningKey.generate(0)
    forged = copy.deepcopy(receipt)
    forged["receipt"]["key"]["id"] = forger.id
    forged["signature"] = forger.sign(RECEIPT_V1_CONTEXT, forged["receipt"])  # as before batches
    report = check(evidence_for(rig, forged, State(), attested), State())
    assert outcomes(report)["gateway_attestation"] == "passed"  # the gateway is genuine...
    assert {"signature", "key"} <= set(report.failed())  # ...and did not sign this
    genuine = check(evidence_for(rig, receipt, State(), attested), State())
    assert genuine.ok, genuine.to_json()


def test_a_quote_for_another_root_or_no_tee_fails_the_gateway_step(
    rig: Gateway, attested: QuoteCheck, tmp_path: Path
) -> None:
    served = complete(rig)
    receipt = receipt_of(rig, served.receipt_id)
    elsewhere = QuoteCheck(attested.pccs_url, SimulatedEnclave().root_ca_der)
    report = check(evidence_for(rig, receipt, State(), elsewhere), State())
    assert {"gateway_attestation", "key"} <= set(report.failed())


def test_each_logged_verdict_is_an_ear_signed_by_the_gateway(
    rig: Gateway, verified: tuple[Served, dict[str, Any], State]
) -> None:
    _, receipt, state = verified
    body = receipt["receipt"]
    answer = httpx.get(
        f"{rig.url}/v1/transparency/ear", params={"leaf": body["verdict_leaf_index"]}
    ).json()
    (public,) = state.keys.values()
    header = jwt.get_unverified_header(answer["ear"])
    assert header["alg"] == "EdDSA" and header["kid"] == body["key"]["id"]
    claims = jwt.decode(
        answer["ear"],
        Ed25519PublicKey.from_public_bytes(unb64(public)),
        algorithms=["EdDSA"],
        options={"verify_exp": False},
    )
    assert claims["eat_profile"] == EAR_PROFILE
    assert claims["iat"] == body["verdict"]["verified_at"]
    (submod,) = claims["submods"].values()
    assert submod["ear.status"] == "affirming"
    assert submod["ear.trustworthiness-vector"]["hardware"] == 2
    assert submod["ear.teegate.verdict"] == body["verdict"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            answer["ear"],
            Ed25519PublicKey.from_public_bytes(SigningKey.generate(0).public),
            algorithms=["EdDSA"],
            options={"verify_exp": False},
        )
    key_leaf = httpx.get(
        f"{rig.url}/v1/transparency/ear", params={"leaf": body["key"]["leaf_index"]}
    )
    assert key_leaf.status_code == 400 and key_leaf.json()["error"]["param"] == "leaf"


def test_the_upstream_quote_behind_the_verdict_is_re_verified(
    rig: Gateway, attested: QuoteCheck, tmp_path: Path
) -> None:
    served = complete(rig)
    receipt = receipt_of(rig, served.receipt_id)
    report = verify(
        served.receipt_id,
        base_url=rig.url,
        api_key=rig.key,
        state_file=tmp_path / "state.json",
        gateway=attested,
        upstream=attested,
    )
    assert report.ok, report.to_json()
    assert outcomes(report)["upstream_quote"] == "passed"
    renamed = copy.deepcopy(receipt)  # a receipt naming another quote than the one served
    renamed["receipt"]["verdict"]["quote_sha256"] = "00" * 32
    with httpx.Client(base_url=rig.url) as client:
        evidence = fetch_evidence(client, renamed, State(), upstream=attested, api_key=rig.key)
    assert evidence.upstream is not None and evidence.upstream.outcome == "failed"
    assert "not the one the receipt names" in evidence.upstream.detail
