"""The official OpenAI SDK against a real gateway and simulated upstream on loopback."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from tests.support.gateway import Devstack, Gateway
from tests.support.openai_schemas import validate

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
PLAIN = "XiaomiMiMo/MiMo-V2-Flash-TEE"  # no capability tags
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, how are you?"}]
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def test_models_list_only_confidential_with_marked_up_prices(gateway: Gateway) -> None:
    catalog = json.loads(
        (__import__("teegate.devstack", fromlist=["x"]).DevstackConfig().catalog_path).read_text(),
        parse_float=Decimal,
    )["data"]
    upstream = {m["id"]: m for m in catalog}
    raw = gateway.client().models.with_raw_response.list()
    validate(json.loads(raw.http_response.text), "ListModelsResponse")
    models = raw.parse().data
    ids = {m.id for m in models}
    chat = [m for m in catalog if m["output_modalities"] == ["text"]]  # no embeddings served
    assert ids == {m["id"] for m in chat if m["confidential_compute"]}
    for model in models:
        extra = model.model_dump()
        assert extra["confidential_compute"] is True
        assert extra["modality"] == "chat"
        assert extra["attestation"]["mode"] == "simulated"
        assert extra["attestation"]["status"] == "verified"
        prices = upstream[model.id]["pricing"]
        assert Decimal(extra["pricing"]["prompt"]) == prices["prompt"] * Decimal("1.85")
        assert Decimal(extra["pricing"]["completion"]) == prices["completion"] * Decimal("1.85")


@pytest.mark.parametrize("path", [R1, R1.replace("/", "%2F")])
def test_retrieve_model_by_slash_id_raw_or_encoded(gateway: Gateway, path: str) -> None:
    response = httpx.get(
        f"{gateway.url}/v1/models/{path}", headers={"Authorization": f"Bearer {gateway.key}"}
    )
    assert response.status_code == 200
    assert response.json()["id"] == R1
    validate(response.json(), "Model")
    assert gateway.client().models.retrieve(R1).id == R1


def test_retrieve_unknown_or_non_confidential_model_is_404(gateway: Gateway) -> None:
    for model in ("nope/nothing", "deepseek-ai/DeepSeek-V3"):
        with pytest.raises(openai.NotFoundError) as info:
            gateway.client().models.retrieve(model)
        assert info.value.code == "model_not_found"


def test_chat_completion(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=R1, messages=HELLO, max_tokens=50
    )
    completion = raw.parse()
    validate(json.loads(raw.http_response.text), "CreateChatCompletionResponse")
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    headers = raw.http_response.headers
    assert headers["x-tee-attestation"].startswith("mode=simulated; verdict=att_")
    assert headers["x-request-id"].startswith("req_")
    assert int(headers["x-ratelimit-limit"]) == 1000
    assert int(headers["x-ratelimit-remaining"]) < 1000


def test_stream_matches_non_stream_and_hides_usage_unless_asked(gateway: Gateway) -> None:
    client = gateway.client()
    whole = client.chat.completions.create(model=V3, messages=HELLO)
    chunks = list(client.chat.completions.create(model=V3, messages=HELLO, stream=True))
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"

    asked = list(
        client.chat.completions.create(
            model=V3, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].choices == []
    assert asked[-1].usage is not None and whole.usage is not None
    assert asked[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_tools_non_stream_and_stream(gateway: Gateway) -> None:
    client = gateway.client()
    completion = client.chat.completions.create(model=V3, messages=HELLO, tools=[WEATHER_TOOL])
    (call,) = completion.choices[0].message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    assert completion.choices[0].finish_reason == "tool_calls"

    arguments = ""
    for chunk in client.chat.completions.create(
        model=V3, messages=HELLO, tools=[WEATHER_TOOL], stream=True
    ):
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            assert delta_call.function is not None
            arguments += delta_call.function.arguments or ""
    assert json.loads(arguments) == json.loads(call.function.arguments)


def test_json_mode_and_json_schema(gateway: Gateway) -> None:
    client = gateway.client()
    completion = client.chat.completions.create(
        model=V3, messages=HELLO, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
    }
    structured = client.chat.completions.create(
        model=V3,
        messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert isinstance(json.loads(structured.choices[0].message.content or "")["n"], int)


def test_reasoning_model_streams_reasoning(gateway: Gateway) -> None:
    chunks = list(gateway.client().chat.completions.create(model=R1, messages=HELLO, stream=True))
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert reasoning


def test_async_sdk_concurrent_requests(gateway: Gateway) -> None:
    import asyncio

    async def run() -> list[str]:
        client = gateway.async_client()
        results = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=V3, messages=[{"role": "user", "content": f"question {i}"}]
                )
                for i in range(20)
            )
        )
        await client.close()
        return [r.choices[0].message.content or "" for r in results]

    answers = asyncio.run(run())
    assert len(answers) == 20 and all(answers)


def test_devstack_catalog_flag_off_is_refused_after_next_sync(
    gateway: Gateway, devstack: Devstack
) -> None:
    import time

    client = gateway.client()
    assert client.chat.completions.create(model=R1, messages=HELLO).choices
    devstack.set_faults(f"flag-off={R1}")
    deadline = time.monotonic() + 5
    while R1 in {m.id for m in client.models.list().data}:
        assert time.monotonic() < deadline, "the catalog never picked up the flag change"
        time.sleep(0.05)
    before = devstack.chat_requests()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=R1, messages=HELLO)
    assert info.value.code == "model_not_confidential"
    assert devstack.chat_requests() == before
    devstack.set_faults()
    deadline = time.monotonic() + 5
    while R1 not in {m.id for m in client.models.list().data}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
