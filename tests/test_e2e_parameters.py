"""OpenAI's generation parameters through the real gateway to the simulated enclave and
back, as the official SDK sees them: each one reaches the upstream (its effect comes
back), in a body and in a stream, and `n` is billed for every choice."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionTokenLogprob,
)

from teegate.billing import Rates, cost_nano, nano_to_usd, prompt_upper_bound, usd_to_nano
from tests.support.billing import settled_generation
from tests.support.gateway import Devstack, Gateway
from tests.support.openai_schemas import validate

V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"  # tools, no reasoning
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, how are you?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": {field: {"type": "string"}},
                "required": [field],
            },
        },
    }
    for name, field in (("get_weather", "city"), ("get_time", "zone"))
]


def create(gateway: Gateway, **fields: Any) -> tuple[ChatCompletion, str]:
    """A non-stream answer, its body checked against OpenAI's schema; and its request id."""
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=V3, messages=HELLO, **fields
    )
    validate(json.loads(raw.http_response.text), "CreateChatCompletionResponse")
    return raw.parse(), raw.http_response.headers["x-request-id"]


def answer(gateway: Gateway, **fields: Any) -> ChatCompletion:
    return create(gateway, **fields)[0]


def stream(gateway: Gateway, **fields: Any) -> list[ChatCompletionChunk]:
    """Every chunk of a stream (with its usage chunk), each checked against OpenAI's schema."""
    params: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    chunks = list(
        gateway.client().chat.completions.create(model=V3, messages=HELLO, **params, **fields)
    )
    for chunk in chunks:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    return chunks


def text_of(chunks: list[ChatCompletionChunk], index: int = 0) -> str:
    return "".join(
        choice.delta.content or ""
        for chunk in chunks
        for choice in chunk.choices
        if choice.index == index
    )


def finish_of(chunks: list[ChatCompletionChunk], index: int = 0) -> list[str]:
    return [
        choice.finish_reason
        for chunk in chunks
        for choice in chunk.choices
        if choice.index == index and choice.finish_reason
    ]


def text(completion: ChatCompletion, index: int = 0) -> str:
    return completion.choices[index].message.content or ""


def generation(gateway: Gateway, request_id: str) -> dict[str, Any]:
    return settled_generation(gateway.url, gateway.key, request_id)


# --- stop -----------------------------------------------------------------------------------------


def test_stop_truncates_the_answer(gateway: Gateway) -> None:
    whole = text(answer(gateway))
    stop = " " + whole.split(" ")[6]
    cut = answer(gateway, stop=[stop])
    assert text(cut) == whole[: whole.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    chunks = stream(gateway, stop=stop)
    assert text_of(chunks) == text(cut)
    assert finish_of(chunks) == ["stop"]
    assert chunks[-1].usage == cut.usage


@pytest.mark.parametrize("streamed", [False, True])
def test_five_stops_are_refused_before_the_upstream(
    gateway: Gateway, devstack: Devstack, streamed: bool
) -> None:
    before = devstack.chat_requests()
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(
            model=V3, messages=HELLO, stop=["a", "b", "c", "d", "e"], stream=streamed
        )
    error = info.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"], error["status"]) == (
        "stop",
        "array_above_max_length",
        400,
    )
    assert (info.value.param, info.value.code) == ("stop", "array_above_max_length")
    assert devstack.chat_requests() == before


def test_top_logprobs_without_logprobs_is_refused(gateway: Gateway, devstack: Devstack) -> None:
    before = devstack.chat_requests()
    with pytest.raises(openai.BadRequestError) as info:
        answer(gateway, top_logprobs=2)
    assert info.value.param == "top_logprobs"
    assert devstack.chat_requests() == before


# --- n --------------------------------------------------------------------------------------------


def test_n_gives_distinct_choices_billed_for_all(gateway: Gateway) -> None:
    body = {"model": V3, "messages": HELLO, "max_completion_tokens": 20, "n": 3}
    completion, request_id = create(gateway, n=3, max_completion_tokens=20)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    texts = [text(completion, i) for i in range(3)]
    assert len(set(texts)) == 3 and all(texts)
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == sum(len(t.split(" ")) for t in texts) == 3 * 20

    record = generation(gateway, request_id)
    pricing = gateway.client().models.retrieve(V3).model_dump()["pricing"]
    rates = Rates(usd_to_nano(pricing["prompt"]), usd_to_nano(pricing["completion"]))
    assert (record["settled_by"], record["tokens_completion"]) == ("usage", 60)
    assert record["tokens_prompt"] == usage.prompt_tokens
    assert record["total_cost"] == nano_to_usd(cost_nano(usage.prompt_tokens, 60, rates))
    assert record["held"] == nano_to_usd(cost_nano(prompt_upper_bound(body), 3 * 20, rates))
    assert record["capped"] is False


def test_n_in_a_stream(gateway: Gateway) -> None:
    whole = answer(gateway, n=3)
    chunks = stream(gateway, n=3)
    assert all(len(chunk.choices) == 1 for chunk in chunks[:-1])
    assert {chunk.choices[0].index for chunk in chunks[:-1]} == {0, 1, 2}
    for index in range(3):
        assert text_of(chunks, index) == text(whole, index)
        assert finish_of(chunks, index) == ["stop"]
    assert chunks[-1].usage == whole.usage


# --- logprobs -------------------------------------------------------------------------------------


def check_entry(entry: ChatCompletionTokenLogprob, alternatives: int) -> None:
    assert isinstance(entry, ChatCompletionTokenLogprob)
    ChatCompletionTokenLogprob.model_validate(entry.model_dump(), strict=True)
    assert entry.logprob <= 0
    assert entry.bytes == list(entry.token.encode())
    assert len(entry.top_logprobs) == alternatives
    assert (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob) == (
        entry.token,
        entry.logprob,
    )
    assert all(top.logprob <= entry.logprob for top in entry.top_logprobs)


def test_logprobs_come_back_as_the_sdk_types(gateway: Gateway) -> None:
    completion = answer(gateway, logprobs=True, top_logprobs=3)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert "".join(entry.token for entry in logprobs.content) == text(completion)
    for entry in logprobs.content:
        check_entry(entry, 3)
    assert answer(gateway).choices[0].logprobs is None

    chunks = stream(gateway, logprobs=True, top_logprobs=3)
    streamed = [
        entry
        for chunk in chunks
        for choice in chunk.choices
        if choice.delta.content and choice.logprobs and choice.logprobs.content
        for entry in choice.logprobs.content
    ]
    assert streamed == logprobs.content


# --- seed -----------------------------------------------------------------------------------------


def test_seed_makes_the_text(gateway: Gateway) -> None:
    first = answer(gateway, seed=42)
    assert text(answer(gateway, seed=42)) == text(first)
    assert text(answer(gateway, seed=43)) != text(first)
    assert first.system_fingerprint
    chunks = stream(gateway, seed=42)
    assert text_of(chunks) == text(first)
    assert text_of(stream(gateway, seed=43)) != text(first)


# --- parallel tool calls --------------------------------------------------------------------------


def test_parallel_tool_calls(gateway: Gateway) -> None:
    calls = answer(gateway, tools=TOOLS).choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2
    single = answer(gateway, tools=TOOLS, parallel_tool_calls=False)
    assert len(single.choices[0].message.tool_calls or []) == 1

    chunks = stream(gateway, tools=TOOLS)
    fragments = [
        call
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls or []
    ]
    assert [f.index for f in fragments if f.id] == [0, 1]
    for index, call in enumerate(calls):
        arguments = "".join(
            f.function.arguments or "" for f in fragments if f.index == index and f.function
        )
        assert arguments == call.function.arguments  # type: ignore[union-attr]
        assert isinstance(json.loads(arguments), dict)
    assert finish_of(chunks) == ["tool_calls"]
    one = stream(gateway, tools=TOOLS, parallel_tool_calls=False)
    heads = [c for k in one for ch in k.choices for c in ch.delta.tool_calls or [] if c.id]
    assert len(heads) == 1


# --- max_completion_tokens ------------------------------------------------------------------------


def test_max_completion_tokens_ends_with_length(gateway: Gateway) -> None:
    capped = answer(gateway, max_completion_tokens=5)
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage is not None and capped.usage.completion_tokens == 5
    assert len(text(capped).split(" ")) == 5
    chunks = stream(gateway, max_completion_tokens=5)
    assert finish_of(chunks) == ["length"]
    assert text_of(chunks) == text(capped)
    assert answer(gateway, max_tokens=5).choices[0].finish_reason == "length"
