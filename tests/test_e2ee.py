"""End-to-end encryption (EHBP) through a real gateway to a real simulated enclave, with
the official `openai` SDK on Tinfoil's own `tinfoil-ehbp` transport (not ours).

Both hops are recorded: client↔gateway by a TCP relay, gateway↔enclave inside the
enclave's TLS (an ASGI wrapper sees what the gateway sent and got), so a canary sent
with `echo:` can be looked for in every byte the gateway handled.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from ehbp import EHBPTransport, ServerIdentity
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import teegate.client
from teegate.attestation import AttestationPolicy, MeasurementAllowList
from teegate.billing import Rates, cost_nano, nano_to_usd, usd_to_nano
from teegate.client import VerifyPolicy
from teegate.devstack import DevstackConfig, SimulatedEnclave, build_app
from tests.support.billing import TcpProxy, settled_books, settled_generation
from tests.support.gateway import (
    Devstack,
    Gateway,
    attested_settings,
    running_gateway,
    serve_enclave,
    wait_for,
)
from tests.support.node import run_node_tests

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
NONCES_PER_MINUTE = 1000
"""Every verifying client here asks for a report with a fresh nonce: far more than a
key's default share of fresh attestations (its own limit is tested elsewhere)."""
CEILING = 64


class WireCapture:
    """Every body byte and header the enclave app received and sent, in clear of TLS."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.recorded = bytearray()
        self.chat_requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["path"] == "/v1/chat/completions":
            self.chat_requests += 1
        for name, value in scope["headers"]:
            self.recorded += name + b": " + value + b"\n"

        async def recording_receive() -> Message:
            message = await receive()
            self.recorded += message.get("body", b"")
            return message

        async def recording_send(message: Message) -> None:
            self.recorded += message.get("body", b"")
            for name, value in message.get("headers", ()):
                self.recorded += name + b": " + value + b"\n"
            await send(message)

        await self._app(scope, recording_receive, recording_send)


def ehbp_openai(
    base_url: str, key: str, key_config: bytes, headers: dict[str, str]
) -> openai.OpenAI:
    identity = ServerIdentity.unmarshal_public_config(key_config)
    http = httpx.Client(transport=EHBPTransport(identity))
    return openai.OpenAI(
        base_url=base_url,
        api_key=key,
        # The SDK's annotation names its own httpx fork; it takes an httpx.Client as is.
        http_client=cast(Any, http),
        max_retries=0,
        default_headers=headers,
    )


@dataclass
class Rig:
    gateway: Gateway
    devstack: Devstack
    enclave: SimulatedEnclave
    enclave_wire: WireCapture
    client_wire: TcpProxy
    gateway_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.gateway_url = f"http://127.0.0.1:{self.client_wire.port}"

    def hpke_key_config(self) -> bytes:
        """The key config the gateway's attestation report shows (the bare transport
        trusts it as is; `teegate.client` verifies the quote that binds it)."""
        nonce = secrets.token_hex(32)
        report = self.get("/v1/attestation/report", model=V3, nonce=nonce).json()
        evidence = report["upstreams"][0]["verdicts"][0]["evidence"]
        return bytes.fromhex(evidence["hpke_key_config"])

    def client(
        self, *, ceiling: int = CEILING, model: str = V3, headers: dict[str, str] | None = None
    ) -> openai.OpenAI:
        """The official SDK over tinfoil-ehbp's transport, with the clear headers set as
        a user of the bare transport sets them (`headers` replaces them)."""
        clear = {"X-TEE-Model": model, "X-TEE-Max-Output-Tokens": str(ceiling)}
        return ehbp_openai(
            f"{self.gateway_url}/v1", self.gateway.key, self.hpke_key_config(), headers or clear
        )

    def get(self, path: str, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.gateway.key}"}
        return httpx.get(f"{self.gateway.url}{path}", headers=headers, params=params)

    def rates(self, model: str) -> Rates:
        pricing = self.get(f"/v1/models/{model}").json()["pricing"]
        return Rates(usd_to_nano(pricing["prompt"]), usd_to_nano(pricing["completion"]))

    def generation(self, request_id: str) -> dict[str, Any]:
        return settled_generation(self.gateway.url, self.gateway.key, request_id)


@pytest.fixture(scope="module")
def module_rig(
    enclave: SimulatedEnclave,
    enclave_files: Path,
    attestation_services: Devstack,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rig]:
    """An enclave with EHBP keys under the session's test PKI, and a gateway attesting it."""
    sealed = SimulatedEnclave(pki=enclave.pki, e2ee=True)
    wire = WireCapture(build_app(DevstackConfig(first_token_delay_s=0.3), enclave=sealed))
    with serve_enclave(wire, sealed, tmp_path_factory.mktemp("e2ee-tls")) as upstream:
        devstack = Devstack(upstream.url)
        settings = attested_settings(
            tmp_path_factory.mktemp("e2ee"),
            devstack,
            attestation_services,
            enclave_files,
            report_nonce_per_minute=NONCES_PER_MINUTE,
        )
        with running_gateway(settings, "acme") as gateway:
            wait_for(gateway, lambda ids: V3 in ids)
            host, port = gateway.url.removeprefix("http://").split(":")
            relay = TcpProxy(host, int(port))
            try:
                yield Rig(gateway, devstack, sealed, wire, relay)
            finally:
                relay.close()


@pytest.fixture
def rig(module_rig: Rig) -> Iterator[Rig]:
    module_rig.devstack.admin("POST", "reset")
    yield module_rig
    module_rig.devstack.admin("POST", "reset")
    settled_books(module_rig.gateway.settings.resolved_database_url, "acme").check()


def canary() -> str:
    return f"CANARY-{secrets.token_hex(8)}"


def assert_unseen(rig: Rig, text: str) -> None:
    for wire in (rig.client_wire.recorded, rig.enclave_wire.recorded):
        assert text.encode() not in wire
    for path in rig.gateway.settings.data_dir.rglob("*"):
        if path.is_file():
            assert text.encode() not in path.read_bytes(), path


def test_whole_answer_comes_back_decrypted_and_the_gateway_never_saw_it(rig: Rig) -> None:
    secret = canary()
    raw = rig.client().chat.completions.with_raw_response.create(
        model=V3, messages=[{"role": "user", "content": f"echo: {secret}"}], max_tokens=20
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == secret
    assert raw.http_response.headers["ehbp-response-nonce"]
    assert_unseen(rig, secret)
    assert "echo:" not in rig.client_wire.recorded.decode("latin-1")


def test_stream_comes_back_decrypted_frame_by_frame(rig: Rig) -> None:
    secret = canary()
    stream = rig.client().chat.completions.create(
        model=V3,
        messages=[{"role": "user", "content": f"echo: {secret} twice {secret}"}],
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"{secret} twice {secret}"
    assert chunks[-1].usage is not None
    assert_unseen(rig, secret)


def test_the_capture_would_have_seen_a_plain_canary(rig: Rig) -> None:
    """The control: the same relay and wrapper do see a plain request's canary."""
    secret = canary()
    plain = openai.OpenAI(base_url=f"{rig.gateway_url}/v1", api_key=rig.gateway.key, max_retries=0)
    plain.chat.completions.create(
        model=V3, messages=[{"role": "user", "content": f"echo: {secret}"}], max_tokens=20
    )
    assert secret.encode() in rig.client_wire.recorded
    assert secret.encode() in rig.enclave_wire.recorded


@pytest.mark.parametrize("stream", [False, True])
def test_the_charge_is_the_enclaves_signed_usage_times_the_price(rig: Rig, stream: bool) -> None:
    client = rig.client()
    body: dict[str, Any] = {
        "model": V3,
        "messages": [{"role": "user", "content": "price me"}],
        "max_tokens": 30,
    }
    truth = client.chat.completions.create(**body)
    assert truth.usage is not None
    if stream:
        with client.chat.completions.with_streaming_response.create(stream=True, **body) as r:
            request_id = r.headers["x-request-id"]
            list(r.parse())
    else:
        raw = client.chat.completions.with_raw_response.create(**body)
        request_id = raw.http_response.headers["x-request-id"]
    record = rig.generation(request_id)
    usage = truth.usage
    assert (record["settled_by"], record["status"]) == ("usage", "ok")
    assert (record["tokens_prompt"], record["tokens_completion"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert record["total_cost"] == nano_to_usd(
        cost_nano(usage.prompt_tokens, usage.completion_tokens, rig.rates(V3))
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", ["usage-forged", "no-usage"])
def test_a_forged_or_missing_usage_settles_by_the_byte_fallback(
    rig: Rig, stream: bool, fault: str
) -> None:
    rig.devstack.set_faults(fault)
    client = rig.client()
    body: dict[str, Any] = {
        "model": V3,
        "messages": [{"role": "user", "content": "forge my bill"}],
        "max_tokens": 30,
    }
    if stream:
        with client.chat.completions.with_streaming_response.create(stream=True, **body) as r:
            request_id = r.headers["x-request-id"]
            list(r.parse())
    else:
        raw = client.chat.completions.with_raw_response.create(**body)
        request_id = raw.http_response.headers["x-request-id"]
        assert raw.parse().choices[0].message.content  # the client still gets its answer
    record = rig.generation(request_id)
    assert (record["settled_by"], record["status"]) == ("fallback", "ok")
    # ceil(ciphertext bytes / 2) is far past the clear ceiling held for: capped there
    assert record["tokens_completion"] == CEILING
    assert record["tokens_prompt"] > 0  # the ciphertext's length, plus the overhead
    assert record["total_cost"] == record["held"]


def test_a_swapped_hpke_key_is_not_confidential_and_nothing_goes_upstream(
    rig: Rig, attestation_services: Devstack, enclave_files: Path, tmp_path: Path
) -> None:
    """The enclave serves (and decrypts with) an HPKE key its quote does not bind: a
    gateway attesting it refuses the model before a byte goes upstream."""
    client_key = rig.hpke_key_config()  # what a client had from an earlier report
    rig.devstack.set_faults("hpke-key-swap")
    settings = attested_settings(
        tmp_path,
        rig.devstack,
        attestation_services,
        enclave_files,
        report_nonce_per_minute=NONCES_PER_MINUTE,
    )
    with running_gateway(settings, "swapped") as gateway:
        before = rig.enclave_wire.chat_requests
        clear = {"X-TEE-Model": V3, "X-TEE-Max-Output-Tokens": "5"}
        client = ehbp_openai(f"{gateway.url}/v1", gateway.key, client_key, clear)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model=V3, messages=[{"role": "user", "content": "hello"}], max_tokens=5
            )
        assert refused.value.code == "model_not_confidential"
        assert rig.enclave_wire.chat_requests == before
        report = httpx.get(
            f"{gateway.url}/v1/attestation/report",
            params={"model": V3},
            headers={"Authorization": f"Bearer {gateway.key}"},
        ).json()
        (verdict,) = report["upstreams"][0]["verdicts"]
        assert (verdict["passed"], verdict["failed_check"]) == (False, "e2ee_key")


def test_a_missing_clear_header_is_a_clear_400(rig: Rig) -> None:
    client = rig.client(headers={"X-TEE-Model": V3})
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=V3, messages=[{"role": "user", "content": "x"}])
    assert refused.value.code == "missing_required_header"
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["param"] == "x-tee-max-output-tokens"


def test_the_enclave_refuses_a_body_that_asks_past_the_clear_ceiling(rig: Rig) -> None:
    client = rig.client(ceiling=10)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=V3, messages=[{"role": "user", "content": "x"}], max_tokens=11
        )
    assert refused.value.code == "e2ee_header_mismatch"


def test_the_enclave_refuses_a_clear_model_other_than_the_bodys(rig: Rig) -> None:
    other = "deepseek-ai/DeepSeek-R1-0528-TEE"
    client = rig.client(model=other)  # held at R1's price, body asks for V3
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=V3, messages=[{"role": "user", "content": "x"}], max_tokens=5
        )
    assert refused.value.code == "e2ee_header_mismatch"


def test_require_e2ee_refuses_a_plain_request_and_serves_an_encrypted_one(
    rig: Rig, attestation_services: Devstack, enclave_files: Path, tmp_path: Path
) -> None:
    settings = attested_settings(
        tmp_path,
        rig.devstack,
        attestation_services,
        enclave_files,
        report_nonce_per_minute=NONCES_PER_MINUTE,
    )
    settings = settings.model_copy(update={"require_e2ee": True})
    with running_gateway(settings, "strict") as gateway:
        wait_for(gateway, lambda ids: V3 in ids)
        before = rig.enclave_wire.chat_requests
        with pytest.raises(openai.BadRequestError) as refused:
            gateway.client().chat.completions.create(
                model=V3, messages=[{"role": "user", "content": "plain"}], max_tokens=5
            )
        assert refused.value.code == "e2ee_required"
        assert rig.enclave_wire.chat_requests == before
        clear = {"X-TEE-Model": V3, "X-TEE-Max-Output-Tokens": "8"}
        sealed = ehbp_openai(f"{gateway.url}/v1", gateway.key, rig.hpke_key_config(), clear)
        answer = sealed.chat.completions.create(
            model=V3, messages=[{"role": "user", "content": "echo: fine"}], max_tokens=8
        )
        assert answer.choices[0].message.content == "fine"


# --- teegate.client: verifies the enclave itself, then encrypts with tinfoil-ehbp ----------------


def dev_policy(rig: Rig) -> VerifyPolicy:
    return VerifyPolicy(root_ca_der=rig.enclave.root_ca_der)


def test_the_verifying_client_answers_whole_and_streamed(rig: Rig) -> None:
    secret = canary()
    client = teegate.client.connect(
        f"{rig.gateway_url}/v1", rig.gateway.key, model=V3, policy=dev_policy(rig), max_retries=0
    )
    whole = client.chat.completions.create(
        model=V3, messages=[{"role": "user", "content": f"echo: {secret}"}], max_tokens=16
    )
    assert whole.choices[0].message.content == secret
    chunks = client.chat.completions.create(
        model=V3, messages=[{"role": "user", "content": f"echo: {secret}"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == secret
    assert_unseen(rig, secret)


async def test_the_async_verifying_client_answers(rig: Rig) -> None:
    secret = canary()
    client = teegate.client.connect_async(
        f"{rig.gateway_url}/v1", rig.gateway.key, model=V3, policy=dev_policy(rig), max_retries=0
    )
    whole = await client.chat.completions.create(
        model=V3, messages=[{"role": "user", "content": f"echo: {secret}"}], max_tokens=16
    )
    assert whole.choices[0].message.content == secret
    await client.close()
    assert_unseen(rig, secret)


def test_the_verifying_client_refuses_an_enclave_its_policy_does_not_trust(rig: Rig) -> None:
    before = rig.enclave_wire.chat_requests
    with pytest.raises(teegate.client.EnclaveNotVerified):  # Intel's root: not the dev one
        teegate.client.connect(f"{rig.gateway_url}/v1", rig.gateway.key, model=V3)
    strict = VerifyPolicy(
        attestation=AttestationPolicy(
            require_gpu=False, measurements=MeasurementAllowList({"mrtd": frozenset({"00" * 48})})
        ),
        root_ca_der=rig.enclave.root_ca_der,
    )
    with pytest.raises(teegate.client.EnclaveNotVerified, match="measurements"):
        teegate.client.connect(f"{rig.gateway_url}/v1", rig.gateway.key, model=V3, policy=strict)
    assert rig.enclave_wire.chat_requests == before


def test_the_verifying_client_refuses_a_swapped_hpke_key(rig: Rig) -> None:
    """The gateway's report shows a key config other than the one the quote binds."""
    rig.devstack.set_faults("hpke-key-swap")
    with pytest.raises(teegate.client.EnclaveNotVerified):
        teegate.client.connect(
            f"{rig.gateway_url}/v1", rig.gateway.key, model=V3, policy=dev_policy(rig)
        )


def test_npm_ehbp_does_one_encrypted_completion(rig: Rig) -> None:
    secret = canary()
    output = run_node_tests(
        "e2ee.test.mjs",
        f"{rig.gateway_url}/v1",
        rig.gateway.key,
        TEEGATE_HPKE_KEY_CONFIG=rig.hpke_key_config().hex(),
        TEEGATE_CANARY=secret,
    )
    assert "# pass 1" in output
    assert_unseen(rig, secret)
