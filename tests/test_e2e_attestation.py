"""Every attack on the attested channel, through the real verifier (dcap-qvl against
the dev root), is refused with 400 model_not_confidential and never reaches the
upstream's chat endpoint."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.app import create_app
from teegate.devstack import DevstackConfig, SimulatedEnclave, build_app
from teegate.devstack.tdx_pki import DEFAULT_MR_TD
from tests.support.gateway import (
    KEY_SECRET,
    Devstack,
    Gateway,
    attested_settings,
    dev_attestation,
    gateway_settings,
    prepare_database,
    running_gateway,
    serve_enclave,
)
from tests.support.servers import ServerThread

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
StartGateway = Callable[..., AbstractContextManager[Gateway]]


@pytest.fixture
def start_gateway(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> StartGateway:
    """A fresh gateway (fresh collateral cache, first attestation at start-up)."""

    @contextmanager
    def start(upstreams: tuple[str, ...] | None = None, **attestation: Any) -> Iterator[Gateway]:
        settings = attested_settings(
            tmp_path_factory.mktemp("attested"),
            devstack,
            attestation_services,
            enclave_files,
            **attestation,
        )
        if upstreams:
            names = [f"up{i}" for i in range(len(upstreams))]
            upstream_settings = [
                settings.upstreams[0].model_copy(update={"name": n, "base_url": u})
                for n, u in zip(names, upstreams, strict=True)
            ]
            settings = settings.model_copy(update={"upstreams": tuple(upstream_settings)})
        with running_gateway(settings, "attested") as gateway:
            yield gateway

    return start


def assert_refused(gateway: Gateway, devstack: Devstack, check: str) -> None:
    before = devstack.chat_requests()
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(model=R1, messages=HELLO)
    assert info.value.code == "model_not_confidential"
    assert check in info.value.message
    assert devstack.chat_requests() == before
    assert R1 not in {m.id for m in gateway.client().models.list().data}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 503
    assert "attestation" in ready.json()["checks"]


def test_a_clean_enclave_passes_with_the_real_verifier(
    start_gateway: StartGateway, devstack: Devstack
) -> None:
    with start_gateway() as gateway:
        raw = gateway.client().chat.completions.with_raw_response.create(model=R1, messages=HELLO)
        assert raw.headers["x-tee-attestation"].startswith("mode=simulated; verdict=att_")
        assert "tcb=UpToDate" in raw.headers["x-tee-attestation"]
        assert httpx.get(f"{gateway.url}/readyz").json()["ready"] is True


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("attest-replay", "report_data"),
        ("attest-unbound", "report_data"),
        ("attest-debug", "debug"),
        ("attest-tampered", "quote_signature"),
        ("attest-no-gpu", "gpu_evidence"),
        ("attest-down", "evidence_unavailable"),
    ],
)
def test_enclave_attacks_are_refused(
    start_gateway: StartGateway, devstack: Devstack, fault: str, check: str
) -> None:
    devstack.set_faults(fault)
    with start_gateway() as gateway:
        assert_refused(gateway, devstack, check)


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("tcb-revoked", "tcb_status"),
        ("tcb-outofdate", "tcb_status"),
        ("collateral-expired", "collateral"),
        ("gpu-bad-signature", "gpu_signature"),
        ("gpu-wrong-nonce", "gpu_nonce"),
        ("gpu-failed", "gpu_result"),
    ],
)
def test_collateral_and_gpu_attacks_are_refused(
    start_gateway: StartGateway,
    devstack: Devstack,
    attestation_services: Devstack,
    fault: str,
    check: str,
) -> None:
    attestation_services.set_faults(fault)
    with start_gateway() as gateway:
        assert_refused(gateway, devstack, check)


def test_outofdate_passes_only_when_the_policy_allows_it(
    start_gateway: StartGateway, devstack: Devstack, attestation_services: Devstack
) -> None:
    attestation_services.set_faults("tcb-outofdate")
    with start_gateway(allowed_tcb_statuses=("UpToDate", "OutOfDate")) as gateway:
        raw = gateway.client().chat.completions.with_raw_response.create(model=R1, messages=HELLO)
        assert "tcb=OutOfDate" in raw.headers["x-tee-attestation"]


def test_mrtd_outside_the_allow_list_is_refused(
    start_gateway: StartGateway, devstack: Devstack, tmp_path: Path
) -> None:
    allow = tmp_path / "measurements.json"
    allow.write_text(json.dumps({"mrtd": [DEFAULT_MR_TD.hex()]}))
    with start_gateway(measurements_file=allow) as gateway:
        assert gateway.client().chat.completions.create(model=R1, messages=HELLO).choices
    devstack.set_faults("attest-wrong-mrtd")
    with start_gateway(measurements_file=allow) as gateway:
        assert_refused(gateway, devstack, "measurements")


def test_test_root_quote_is_refused_in_production(
    devstack: Devstack, attestation_services: Devstack, tmp_path: Path
) -> None:
    settings = gateway_settings(
        tmp_path,
        devstack.url,
        environment="production",
        key_hash_secret=KEY_SECRET,
        attestation=dev_attestation(attestation_services.url, tmp_path / "unused.der").model_copy(
            update={"dev_root_ca_file": None}
        ),
    )
    key = prepare_database(settings, "prod")
    server = ServerThread(create_app(settings)).start()
    try:
        gateway = Gateway(server.url, settings, key, "prod")
        assert_refused(gateway, devstack, "quote_signature")
        report = httpx.get(
            f"{gateway.url}/v1/attestation/report",
            params={"model": R1},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert report.status_code == 200
        (upstream,) = report.json()["upstreams"]
        assert upstream["passed"] is False
        assert "quote_signature" in upstream["reason"]
    finally:
        server.stop()


def test_tls_key_swapped_after_attestation_is_refused(
    start_gateway: StartGateway, devstack: Devstack
) -> None:
    with start_gateway() as gateway:
        client = gateway.client()
        assert client.chat.completions.create(model=R1, messages=HELLO).choices
        devstack.set_faults("tls-key-swap")

        def call(_: int) -> str:
            try:
                client.chat.completions.create(model=R1, messages=HELLO)
            except openai.BadRequestError as exc:
                return str(exc.code)
            return "ok"

        with ThreadPoolExecutor(6) as pool:  # new connections meet the swapped key
            outcomes = list(pool.map(call, range(6)))
        assert "model_not_confidential" in outcomes
        before = devstack.chat_requests()
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=R1, messages=HELLO)
        assert info.value.code == "model_not_confidential"
        assert devstack.chat_requests() == before


def test_evidence_down_until_the_verdict_goes_stale(
    start_gateway: StartGateway, devstack: Devstack
) -> None:
    with start_gateway(verdict_ttl_s=2, refresh_margin_s=1, retry_interval_s=1) as gateway:
        assert gateway.client().chat.completions.create(model=R1, messages=HELLO).choices
        devstack.set_faults("attest-down")
        deadline = time.monotonic() + 10
        while True:
            try:
                gateway.client().chat.completions.create(model=R1, messages=HELLO)
            except openai.BadRequestError as exc:
                assert exc.code == "model_not_confidential"
                break
            assert time.monotonic() < deadline, "the verdict never went stale"
            time.sleep(0.1)
        assert_refused(gateway, devstack, "stale")


def test_report_with_client_nonce_is_fresh_evidence(gateway: Gateway) -> None:
    nonce = secrets.token_hex(32)
    response = httpx.get(
        f"{gateway.url}/v1/attestation/report",
        params={"model": R1, "nonce": nonce},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert response.status_code == 200
    (upstream,) = response.json()["upstreams"]
    (verdict,) = upstream["verdicts"]
    assert verdict["passed"] is True
    assert verdict["mode"] == "simulated"
    assert verdict["evidence"]["nonce"] == nonce
    assert verdict["evidence"]["expected_report_data"].endswith(nonce)
    assert {c["name"] for c in verdict["checks"]} >= {
        "tee_type",
        "quote_signature",
        "debug",
        "tcb_status",
        "report_data",
        "gpu_signature",
    }
    bad = httpx.get(
        f"{gateway.url}/v1/attestation/report",
        params={"model": R1, "nonce": "xyz"},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "nonce"


def test_failover_between_upstreams_without_a_failed_request(
    start_gateway: StartGateway,
    devstack: Devstack,
    enclave: SimulatedEnclave,
    tmp_path: Path,
) -> None:
    second_enclave = SimulatedEnclave(pki=enclave.pki)
    second_app = build_app(DevstackConfig(), enclave=second_enclave)
    with serve_enclave(second_app, second_enclave, tmp_path) as second:
        other = Devstack(second.url)
        with start_gateway(
            upstreams=(devstack.url, second.url),
            verdict_ttl_s=4,  # with room for a refresh on a loaded machine (dcap-qvl + NRAS)
            refresh_margin_s=2,
            retry_interval_s=1,
        ) as gateway:
            client = gateway.client()
            devstack.set_faults("attest-debug")
            deadline = time.monotonic() + 10
            served_by_other = 0
            while served_by_other < 5:
                before = other.chat_requests()
                assert client.chat.completions.create(model=R1, messages=HELLO).choices
                served_by_other += other.chat_requests() - before
                assert time.monotonic() < deadline, "never failed over"
            first_before = devstack.chat_requests()
            for _ in range(5):
                assert client.chat.completions.create(model=R1, messages=HELLO).choices
            assert devstack.chat_requests() == first_before


def write_attested_config(path: Path, devstack: Devstack, services: Devstack, root: Path) -> Path:
    path.write_text(
        f'environment = "development"\nkey_hash_secret = "{KEY_SECRET}"\n'
        f'data_dir = "{path.parent}"\n'
        f'[[upstreams]]\nname = "devstack"\nbase_url = "{devstack.url}"\n'
        f'attestation = "attested-tls"\n'
        f'[attestation]\npccs_url = "{services.url}"\n'
        f'nras_attest_url = "{services.url}/v3/attest/gpu"\n'
        f'nras_jwks_url = "{services.url}/.well-known/jwks.json"\n'
        f'nras_issuer = "{dev_attestation(services.url, root).nras_issuer}"\n'
        f'dev_root_ca_file = "{root}"\n'
    )
    return path


def test_attest_and_models_commands(
    devstack: Devstack, attestation_services: Devstack, enclave_files: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    teegate = str(Path(sys.executable).with_name("teegate"))
    config = write_attested_config(
        tmp_path / "teegate.toml", devstack, attestation_services, enclave_files / "root-ca.der"
    )
    passed = subprocess.run(
        [teegate, "attest", R1, "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert passed.returncode == 0, passed.stderr
    (result,) = json.loads(passed.stdout)
    (verdict,) = result["verdicts"]
    assert verdict["passed"] and verdict["mode"] == "simulated"
    listed = subprocess.run(
        [teegate, "models", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert R1 in {m["id"] for m in json.loads(listed.stdout)}

    devstack.set_faults("attest-debug")
    failed = subprocess.run(
        [teegate, "attest", R1, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1
    assert "debug" in failed.stdout + failed.stderr
