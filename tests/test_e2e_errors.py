"""Every error row the gateway owns, as the official SDK sees it, and proof that
refused requests never reach the upstream."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from teegate.store import AccountStore
from tests.support.gateway import Devstack, Gateway, with_store
from tests.support.metrics import metric
from tests.support.openai_schemas import validate

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
PLAIN = "XiaomiMiMo/MiMo-V2-Flash-TEE"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE = {
    "type": "file",
    "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
}


def envelope_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    validate(body, "ErrorResponse")
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param", "status"}
    assert body["error"]["status"] == exc.status_code
    return dict(body["error"])


REFUSALS = [
    pytest.param(
        {"model": "nope/nothing"},
        openai.NotFoundError,
        "model_not_found",
        "model",
        "does not exist",
        id="unknown-model",
    ),
    pytest.param(
        {"model": "deepseek-ai/DeepSeek-V3"},
        openai.BadRequestError,
        "model_not_confidential",
        "model",
        "Use 'deepseek-ai/DeepSeek-V3-0324-TEE' instead.",
        id="non-tee-model",
    ),
    pytest.param(
        {"model": "Qwen/Qwen3-32B"},
        openai.BadRequestError,
        "model_not_confidential",
        "model",
        "Use 'Qwen/Qwen3-32B-TEE' instead.",
        id="non-tee-qwen",
    ),
    pytest.param(
        {"model": PLAIN, "tools": [TOOL]},
        openai.BadRequestError,
        "unsupported_capability",
        "tools",
        "does not support tools",
        id="tools",
    ),
    pytest.param(
        {"model": PLAIN, "response_format": {"type": "json_object"}},
        openai.BadRequestError,
        "unsupported_capability",
        "response_format",
        "json_mode",
        id="json-mode",
    ),
    pytest.param(
        {
            "model": "deepseek-ai/DeepSeek-R1-0528-TEE",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        },
        openai.BadRequestError,
        "unsupported_capability",
        "response_format",
        "structured_outputs",
        id="structured-outputs",
    ),
    pytest.param(
        {"model": R1, "temperature": 2.5},
        openai.BadRequestError,
        "invalid_value",
        "temperature",
        "between 0 and 2",
        id="temperature",
    ),
    pytest.param(
        {"model": R1, "top_p": 1.5},
        openai.BadRequestError,
        "invalid_value",
        "top_p",
        "between 0 and 1",
        id="top_p",
    ),
    pytest.param(
        {"model": R1, "max_tokens": 70000},
        openai.BadRequestError,
        "invalid_value",
        "max_tokens",
        "at most 65536",
        id="max-tokens-over-model",
    ),
    pytest.param(
        {"model": R1, "max_tokens": 0},
        openai.BadRequestError,
        "invalid_value",
        "max_tokens",
        "at least 1",
        id="max-tokens-zero",
    ),
    pytest.param(
        {"model": R1, "messages": []},
        openai.BadRequestError,
        "empty_array",
        "messages",
        "at least one",
        id="no-messages",
    ),
    pytest.param(
        {
            "model": R1,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "?"}, IMAGE]}],
        },
        openai.BadRequestError,
        "unsupported_capability",
        "messages",
        f"Model '{R1}' does not support image_url content parts",
        id="image-part",
    ),
    pytest.param(
        {"model": R1, "messages": [{"role": "user", "content": [AUDIO]}]},
        openai.BadRequestError,
        "unsupported_capability",
        "messages",
        f"Model '{R1}' does not support input_audio content parts",
        id="audio-part",
    ),
    pytest.param(
        {"model": R1, "messages": [{"role": "user", "content": [FILE]}]},
        openai.BadRequestError,
        "unsupported_capability",
        "messages",
        f"Model '{R1}' does not support file content parts",
        id="file-part",
    ),
    pytest.param(
        {"model": R1, "messages": [{"role": "robot", "content": "x"}]},
        openai.BadRequestError,
        "invalid_value",
        "messages[0].role",
        "expected one of",
        id="bad-role",
    ),
    pytest.param(
        {"model": R1, "messages": [{"role": "user"}]},
        openai.BadRequestError,
        "missing_required_parameter",
        "messages[0].content",
        "Missing",
        id="no-content",
    ),
]


@pytest.mark.parametrize(("fields", "error", "code", "param", "message"), REFUSALS)
def test_refusals_are_enveloped_and_never_reach_upstream(
    gateway: Gateway,
    devstack: Devstack,
    fields: dict[str, Any],
    error: type[Exception],
    code: str,
    param: str,
    message: str,
) -> None:
    request: dict[str, Any] = {"messages": HELLO, **fields}
    before = devstack.chat_requests()
    with pytest.raises(error) as info:
        gateway.client().chat.completions.create(**request)
    assert isinstance(info.value, openai.APIStatusError)
    body = envelope_of(info.value)
    assert (body["code"], body["param"]) == (code, param)
    assert message in body["message"]
    assert info.value.response.headers["x-ratelimit-limit"] == "1000"
    assert devstack.chat_requests() == before


@pytest.mark.parametrize(
    ("api_key", "message"),
    [
        ("", "didn't provide"),
        ("sk-not-ours", "Malformed"),
        ("vgpu_sk_" + "A" * 43, "Incorrect API key"),
    ],
)
def test_bad_keys_are_401(gateway: Gateway, devstack: Devstack, api_key: str, message: str) -> None:
    before = devstack.chat_requests()
    with pytest.raises(openai.AuthenticationError) as info:
        gateway.client(api_key=api_key or "x").chat.completions.create(
            model=R1,
            messages=HELLO,
            extra_headers={"Authorization": ""} if not api_key else None,
        )
    assert envelope_of(info.value)["code"] == "invalid_api_key"
    assert message in info.value.message
    assert devstack.chat_requests() == before


def test_revoked_key_is_401_within_a_second(gateway: Gateway) -> None:
    import time

    key = gateway.issue_key(name="to-revoke")
    client = gateway.client(api_key=key)
    assert client.models.list().data

    async def revoke(store: AccountStore) -> None:
        for k in await store.list_keys(gateway.account):
            if k.name == "to-revoke":
                await store.revoke_key(k.id)

    with_store(gateway.settings, revoke)
    time.sleep(1.05)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def raw_post(gateway: Gateway, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gateway.key}", **kwargs.pop("headers", {})}
    return httpx.post(f"{gateway.url}{path}", headers=headers, **kwargs)


def test_malformed_json_wrong_content_type_and_oversized_body(
    gateway: Gateway, devstack: Devstack
) -> None:
    before = devstack.chat_requests()
    bad_json = raw_post(
        gateway,
        "/v1/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "invalid_json"
    form = raw_post(gateway, "/v1/chat/completions", data={"model": R1})
    assert form.status_code == 400
    assert form.json()["error"]["code"] == "unsupported_content_type"
    limit = gateway.settings.max_body_bytes
    huge = raw_post(
        gateway,
        "/v1/chat/completions",
        content=b"x" * (limit + 1),
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "request_too_large"

    def chunked() -> Any:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = raw_post(
        gateway,
        "/v1/chat/completions",
        content=chunked(),
        headers={"Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    assert devstack.chat_requests() == before


def test_unknown_route_and_wrong_method(gateway: Gateway) -> None:
    missing = httpx.get(f"{gateway.url}/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(f"{gateway.url}/v1/chat/completions")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


UNAVAILABLE = [
    "/v1/embeddings",
    "/v1/images/generations",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/videos",
    "/v1/video/generations",
    "/v1/moderations",
    "/v1/fine_tuning/jobs",
    "/v1/fine-tuning/jobs",
]


@pytest.mark.parametrize("path", UNAVAILABLE)
def test_other_modalities_are_503_not_available(gateway: Gateway, path: str) -> None:
    response = raw_post(gateway, path, json={"model": "x", "input": "y"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_available"
    validate(response.json(), "ErrorResponse")
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-ratelimit-limit"] == "1000"


@pytest.mark.parametrize("path", UNAVAILABLE)
@pytest.mark.parametrize("authorization", ["", "Bearer sk-not-ours", "Bearer vgpu_sk_" + "A" * 43])
def test_other_modalities_check_the_key_first(
    gateway: Gateway, path: str, authorization: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.post(f"{gateway.url}{path}", headers=headers, json={"input": "y"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_sdk_asks_for_embeddings_once_and_is_told_not_available(gateway: Gateway) -> None:
    answered = 'teegate_requests_total{route="/v1/embeddings",status="503"}'
    before = metric(gateway.url, answered)
    with pytest.raises(openai.InternalServerError) as info:
        gateway.client(max_retries=2).embeddings.create(model="any", input="hello")
    assert info.value.status_code == 503
    assert envelope_of(info.value)["code"] == "not_available"
    assert metric(gateway.url, answered) == before + 1  # the SDK did not retry


def test_upstream_http_500_is_502_upstream_error(gateway: Gateway, devstack: Devstack) -> None:
    devstack.set_faults("http-500")
    with pytest.raises(openai.APIStatusError) as info:
        gateway.client().chat.completions.create(model=R1, messages=HELLO)
    assert info.value.status_code == 502
    assert envelope_of(info.value)["code"] == "upstream_error"
    with pytest.raises(openai.APIStatusError) as streamed:
        gateway.client().chat.completions.create(model=R1, messages=HELLO, stream=True)
    assert streamed.value.status_code == 502


def test_upstream_hang_is_504_upstream_timeout(gateway: Gateway, devstack: Devstack) -> None:
    devstack.set_faults("hang")
    with pytest.raises(openai.APIStatusError) as info:
        gateway.client().chat.completions.create(model=R1, messages=HELLO)
    assert info.value.status_code == 504
    assert envelope_of(info.value)["code"] == "upstream_timeout"


@pytest.mark.parametrize("fault", ["drop-mid-stream", "garbage-sse"])
def test_broken_stream_ends_with_an_error_event(
    gateway: Gateway, devstack: Devstack, fault: str
) -> None:
    devstack.set_faults(fault)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in gateway.client().chat.completions.create(
            model=R1, messages=HELLO, stream=True
        ):
            received.append(chunk)
    assert received, "chunks before the break are relayed"
    assert "upstream" in info.value.message


def test_slow_first_token_still_completes(gateway: Gateway, devstack: Devstack) -> None:
    devstack.set_faults("slow-first-token")
    completion = gateway.client().chat.completions.create(model=R1, messages=HELLO)
    assert completion.choices[0].message.content
