"""A `chutes` upstream end to end: the session devstack serves both the Chutes evidence
API and inference over its TLS (its self-signed certificate trusted through
`evidence_ca_file`, development only), verified by the real verifier against the dev
root. Each model is admitted on its own chute's verdict; attacks on the evidence are
refused with 400 model_not_confidential before any request reaches the upstream."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.config import Settings, UpstreamSettings
from teegate.devstack import DevstackConfig
from tests.support.gateway import (
    KEY_SECRET,
    Devstack,
    Gateway,
    dev_attestation,
    gateway_settings,
    running_gateway,
)

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CATALOG = json.loads(DevstackConfig().catalog_path.read_text())["data"]
CHUTE_IDS = {m["id"]: m["chute_id"] for m in CATALOG}
# The session's devstack serves no embedding model (DevstackConfig(embeddings=False)).
CONFIDENTIAL = {
    m["id"] for m in CATALOG if m["confidential_compute"] and m["output_modalities"] == ["text"]
}


def chutes_settings(
    data_dir: Path, devstack: Devstack, services: Devstack, enclave_files: Path
) -> Settings:
    upstream = UpstreamSettings(
        name="chutes",
        base_url=devstack.url,
        attestation="chutes",
        evidence_url=devstack.url,
        evidence_ca_file=enclave_files / "enclave-cert.pem",
    )
    return gateway_settings(
        data_dir,
        devstack.url,
        attestation=dev_attestation(services.url, enclave_files / "root-ca.der"),
        upstreams=(upstream,),
    )


StartGateway = Callable[[], AbstractContextManager[Gateway]]


@pytest.fixture
def start_gateway(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> StartGateway:
    @contextmanager
    def start() -> Iterator[Gateway]:
        settings = chutes_settings(
            tmp_path_factory.mktemp("chutes"), devstack, attestation_services, enclave_files
        )
        with running_gateway(settings, "chutes") as gateway:
            yield gateway

    return start


def report(gateway: Gateway, **params: str) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/v1/attestation/report",
        params={"model": R1, **params},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_chat_through_an_attested_chute(start_gateway: StartGateway, devstack: Devstack) -> None:
    with start_gateway() as gateway:
        before = devstack.chat_requests()
        raw = gateway.client().chat.completions.with_raw_response.create(model=R1, messages=HELLO)
        assert raw.parse().choices
        assert devstack.chat_requests() == before + 1
        header = raw.headers["x-tee-attestation"]
        assert header.startswith("mode=simulated; verdict=att_")
        assert "tcb=UpToDate" in header
        assert header.endswith("; evidence=chutes; channel=unbound")

        models = {m.id: m for m in gateway.client().models.list().data}
        assert set(models) == CONFIDENTIAL
        attestation = (models[R1].model_extra or {})["attestation"]
        assert attestation["status"] == "verified" and attestation["mode"] == "simulated"
        assert httpx.get(f"{gateway.url}/readyz").json()["ready"] is True

        (upstream,) = report(gateway)["upstreams"]
        assert upstream["chute_id"] == CHUTE_IDS[R1]
        assert (upstream["passed"], upstream["mode"], upstream["channel"]) == (
            True,
            "simulated",
            "unbound",
        )
        verdicts = upstream["verdicts"]
        assert len(verdicts) == 2 and all(v["passed"] for v in verdicts)
        assert {v["upstream"] for v in verdicts} == {f"chutes#{CHUTE_IDS[R1]}"}
        assert verdict_id(header) in {v["id"] for v in verdicts}

        nonce = secrets.token_hex(32)
        fresh = report(gateway, nonce=nonce)["upstreams"][0]["verdicts"]
        assert len(fresh) == 2 and all(v["evidence"]["nonce"] == nonce for v in fresh)
        assert all(v["evidence"]["e2e_pubkey"] for v in fresh)


def verdict_id(header: str) -> str:
    fields = dict(part.split("=", 1) for part in header.split("; "))
    return fields["verdict"]


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("attest-debug", "debug"),
        ("attest-unbound", "report_data"),
        ("attest-tampered", "quote_signature"),
    ],
)
def test_chute_evidence_attacks_are_refused(
    start_gateway: StartGateway, devstack: Devstack, fault: str, check: str
) -> None:
    devstack.set_faults(fault)
    with start_gateway() as gateway:
        before = devstack.chat_requests()
        with pytest.raises(openai.BadRequestError) as info:
            gateway.client().chat.completions.create(model=R1, messages=HELLO)
        assert info.value.code == "model_not_confidential"
        assert check in info.value.message
        with pytest.raises(openai.BadRequestError):
            gateway.client().chat.completions.create(model=R1, messages=HELLO, stream=True)
        assert devstack.chat_requests() == before
        assert gateway.client().models.list().data == []
        ready = httpx.get(f"{gateway.url}/readyz")
        assert ready.status_code == 503 and "attestation" in ready.json()["checks"]
        (upstream,) = report(gateway)["upstreams"]
        assert upstream["passed"] is False and check in upstream["reason"]


def write_chutes_config(
    path: Path, devstack: Devstack, services: Devstack, enclave_files: Path
) -> Path:
    attestation = dev_attestation(services.url, enclave_files / "root-ca.der")
    path.write_text(
        f'environment = "development"\nkey_hash_secret = "{KEY_SECRET}"\n'
        f'data_dir = "{path.parent}"\n'
        f'[[upstreams]]\nname = "chutes"\nbase_url = "{devstack.url}"\n'
        f'attestation = "chutes"\nevidence_url = "{devstack.url}"\n'
        f'evidence_ca_file = "{enclave_files / "enclave-cert.pem"}"\n'
        f'[attestation]\npccs_url = "{services.url}"\n'
        f'nras_attest_url = "{attestation.nras_attest_url}"\n'
        f'nras_jwks_url = "{attestation.nras_jwks_url}"\n'
        f'nras_issuer = "{attestation.nras_issuer}"\n'
        f'dev_root_ca_file = "{attestation.dev_root_ca_file}"\n'
    )
    return path


def teegate(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("teegate")), *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def test_models_and_attest_commands(
    devstack: Devstack, attestation_services: Devstack, enclave_files: Path, tmp_path: Path
) -> None:
    config = write_chutes_config(
        tmp_path / "teegate.toml", devstack, attestation_services, enclave_files
    )
    listed = teegate("models", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    models = {m["id"]: m for m in json.loads(listed.stdout)}
    assert set(models) == CONFIDENTIAL
    assert models[R1]["attestation"]["mode"] == "simulated"

    attested = teegate("attest", R1, "--json", config=config)
    assert attested.returncode == 0, attested.stderr
    (result,) = json.loads(attested.stdout)
    assert (result["attestation"], result["chute_id"], result["channel"]) == (
        "chutes",
        CHUTE_IDS[R1],
        "unbound",
    )
    assert len(result["verdicts"]) == 2 and all(v["passed"] for v in result["verdicts"])

    devstack.set_faults("attest-debug")
    failed = teegate("attest", R1, config=config)
    assert failed.returncode == 1
    assert "debug" in failed.stdout + failed.stderr
    assert "channel not bound" in failed.stdout
