"""A key's own policy, end to end with the official SDK: its model allow-list and its
attestation floor narrow what the gateway serves it, and nothing refused reaches
the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.apikeys import KeyPolicy
from teegate.catalog import AttestationFloor
from tests.support.gateway import Devstack, Gateway, attested_settings, running_gateway

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
QWEN = "Qwen/Qwen3-32B-TEE"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
UP_TO_DATE = AttestationFloor(tcb=frozenset({"UpToDate"}))


@pytest.fixture
def lenient(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """A gateway that itself accepts an OutOfDate TCB, on an OutOfDate upstream."""
    attestation_services.set_faults("tcb-outofdate")
    settings = attested_settings(
        tmp_path_factory.mktemp("lenient"),
        devstack,
        attestation_services,
        enclave_files,
        allowed_tcb_statuses=("UpToDate", "OutOfDate"),
    )
    with running_gateway(settings, "lenient") as gateway:
        yield gateway


def test_a_model_outside_the_allow_list_is_refused_403_before_upstream(
    gateway: Gateway, devstack: Devstack
) -> None:
    key = gateway.issue_key(policy=KeyPolicy(models=(R1, "Qwen/")))
    client = gateway.client(api_key=key)
    before = devstack.chat_requests()
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model=V3, messages=HELLO)
    assert info.value.status_code == 403
    assert info.value.code == "model_not_allowed"
    assert V3 in info.value.message
    assert info.value.response.headers["x-ratelimit-limit"]
    assert devstack.chat_requests() == before

    assert client.chat.completions.create(model=R1, messages=HELLO).choices
    listed = {m.id for m in client.models.list().data}
    assert R1 in listed
    assert QWEN in listed
    assert all(m == R1 or m.startswith("Qwen/") for m in listed)
    assert client.models.retrieve(QWEN).id == QWEN
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(V3)
    assert V3 in {m.id for m in gateway.client().models.list().data}


def test_a_key_requiring_up_to_date_is_refused_an_out_of_date_upstream(
    lenient: Gateway, devstack: Devstack
) -> None:
    strict = lenient.client(api_key=lenient.issue_key(policy=KeyPolicy(attestation=UP_TO_DATE)))
    before = devstack.chat_requests()
    with pytest.raises(openai.BadRequestError) as info:
        strict.chat.completions.create(model=R1, messages=HELLO)
    assert info.value.code == "model_not_confidential"
    assert "key's attestation policy" in info.value.message
    assert "TCB status OutOfDate" in info.value.message
    with pytest.raises(openai.BadRequestError):
        strict.chat.completions.create(model=R1, messages=HELLO, stream=True)
    assert devstack.chat_requests() == before
    assert strict.models.list().data == []

    # The gateway itself accepts the upstream: a key without a floor is served.
    raw = lenient.client().chat.completions.with_raw_response.create(model=R1, messages=HELLO)
    assert "tcb=OutOfDate" in raw.headers["x-tee-attestation"]
    assert "key_policy" not in raw.headers["x-tee-attestation"]
    assert devstack.chat_requests() == before + 1


def test_the_policy_in_force_is_echoed_in_x_tee_attestation(
    lenient: Gateway, devstack: Devstack
) -> None:
    floor = AttestationFloor(
        tcb=frozenset({"UpToDate", "OutOfDate"}),
        require_gpu=True,
        upstreams=frozenset({"devstack"}),
        max_age_s=3600,
    )
    key = lenient.issue_key(policy=KeyPolicy(models=("deepseek-ai/",), attestation=floor))
    client = lenient.client(api_key=key)
    raw = client.chat.completions.with_raw_response.create(model=R1, messages=HELLO)
    echoed = "; key_policy=tcb:OutOfDate/UpToDate,gpu,upstreams:devstack,max_age_s:3600"
    assert "tcb=OutOfDate" in raw.headers["x-tee-attestation"]
    assert raw.headers["x-tee-attestation"].endswith(echoed)
    with client.chat.completions.with_streaming_response.create(
        model=R1, messages=HELLO, stream=True
    ) as streamed:
        assert streamed.headers["x-tee-attestation"].endswith(echoed)
        assert "[DONE]" in "".join(streamed.iter_lines())
    described = httpx.get(
        f"{lenient.url}/v1/models/{R1}", headers={"Authorization": f"Bearer {key}"}
    )
    assert described.status_code == 200


def test_v1_key_describes_the_callers_own_key(gateway: Gateway) -> None:
    policy = KeyPolicy(models=(R1,), attestation=UP_TO_DATE, tpm=5000)
    key = gateway.issue_key(policy=policy, rpm=30)
    answer = httpx.get(f"{gateway.url}/v1/key", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-limit"] == "30"
    data = answer.json()["data"]
    assert data["id"].startswith("key_")
    assert data["object"] == "key"
    assert data["rate_limit"] == {
        "requests_per_minute": 30,
        "tokens_per_minute": 5000,
        "interval": "1m",
    }
    assert data["models"] == [R1]
    assert data["attestation"]["tcb"] == ["UpToDate"]
    assert key not in answer.text

    plain = httpx.get(
        f"{gateway.url}/v1/key", headers={"Authorization": f"Bearer {gateway.key}"}
    ).json()["data"]
    assert plain["rate_limit"]["tokens_per_minute"] is None
    assert (plain["models"], plain["attestation"], plain["budgets"]) == (None, None, [])
    assert plain["id"] != data["id"]
    assert httpx.get(f"{gateway.url}/v1/key").status_code == 401
