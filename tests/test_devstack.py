"""The simulated confidential upstream, over real sockets, as the gateway and SDKs see it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

import teegate.devstack
from teegate.devstack import FAULTS, DevstackConfig, build_app
from tests.support.openai_schemas import SchemaMismatch, validate, validate_sdk
from tests.support.servers import ServerThread, serving

REASONING_MODEL = "deepseek-ai/DeepSeek-V3.2-TEE"
PLAIN_MODEL = "deepseek-ai/DeepSeek-V3-0324-TEE"
CATALOG = json.loads(DevstackConfig().catalog_path.read_text())
CHAT = "/v1/chat/completions"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 3, "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "alerts": {"type": "boolean"},
        "stops": {
            "type": "array",
            "minItems": 2,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "lat": {"type": "number"}},
                "required": ["name", "lat"],
                "additionalProperties": False,
            },
        },
        "start": {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]},
        "origin": {"$ref": "#/$defs/point"},
    },
    "required": ["city", "unit", "days", "stops", "origin"],
    "additionalProperties": False,
    "$defs": {
        "point": {
            "type": "object",
            "properties": {"x": {"type": "integer", "multipleOf": 5}},
            "required": ["x"],
        }
    },
}
TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMETERS}},
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string"}},
                "required": ["zone"],
            },
        },
    },
]


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[ServerThread]:
    with serving(build_app(DevstackConfig(first_token_delay_s=0.3, embeddings=True))) as server:
        yield server


@pytest.fixture
def upstream(upstream_server: ServerThread) -> Iterator[ServerThread]:
    """The module's server, reset after each test so faults and counters never leak.

    Named apart from conftest's session `devstack`, whose autouse reset expects its
    own type: these tests drive the devstack directly, without the gateway.
    """
    yield upstream_server
    httpx.post(upstream_server.url + "/admin/reset").raise_for_status()


@pytest.fixture
def http(upstream: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, timeout=5) as client:
        yield client


@pytest.fixture
def sdk(upstream: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=upstream.url + "/v1", api_key="sk-test", max_retries=0, timeout=5
    ) as client:
        yield client


def body(**fields: Any) -> dict[str, Any]:
    return {"model": PLAIN_MODEL, "messages": HELLO} | fields


def chat(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = http.post(CHAT, json=body(**fields))
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    validate(payload, "CreateChatCompletionResponse")
    return payload


def data_lines(http: httpx.Client, **fields: Any) -> list[str]:
    """The `data:` payloads of a stream, raw, in order."""
    with http.stream("POST", CHAT, json=body(stream=True, **fields)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def chunks(http: httpx.Client, **fields: Any) -> list[dict[str, Any]]:
    """Every chunk of a complete stream, each validated against OpenAI's schema."""
    lines = data_lines(http, **fields)
    assert lines[-1] == "[DONE]"
    parsed = [json.loads(line) for line in lines[:-1]]
    for chunk in parsed:
        validate(chunk, "CreateChatCompletionStreamResponse")
    return parsed


def joined(stream: list[dict[str, Any]], field: str) -> str:
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in stream if c["choices"])


def stats(http: httpx.Client) -> dict[str, int]:
    result: dict[str, int] = http.get("/admin/stats").json()
    return result


def set_faults(http: httpx.Client, *faults: str) -> None:
    http.put("/admin/faults", json={"faults": list(faults)}).raise_for_status()


def wait_until_idle(http: httpx.Client, within_s: float) -> float:
    """Seconds until no chat request is in flight; fails after `within_s`."""
    start = time.monotonic()
    while stats(http)["chat_in_flight"] != 0:
        assert time.monotonic() - start < within_s, "generation still running"
        time.sleep(0.02)
    return time.monotonic() - start


# --- package surface and config -------------------------------------------------------------------


def test_public_api_is_exactly_what_the_gateway_imports() -> None:
    assert teegate.devstack.__all__ == [
        "FAULTS",
        "SERVICES_FAULTS",
        "DevstackConfig",
        "SimulatedAttestationServices",
        "SimulatedEnclave",
        "SimulatedTsm",
        "build_app",
        "build_services_app",
        "devstack_servers",
        "serve_devstack",
    ]
    expected = {"drop-mid-stream", "no-usage", "slow-first-token", "http-500"}
    expected |= {"garbage-sse", "hang", "flag-off"}
    expected |= {
        "attest-replay",
        "attest-unbound",
        "tls-key-swap",
        "attest-debug",
        "attest-wrong-mrtd",
        "attest-tampered",
        "attest-down",
        "attest-no-gpu",
        "hpke-key-swap",
        "usage-forged",
    }
    assert expected == FAULTS


def test_packaged_catalog_ships_next_to_the_code() -> None:
    path = DevstackConfig().catalog_path
    assert path == Path(teegate.devstack.__file__).with_name("catalog.json")
    assert len(CATALOG["data"]) == 22


@pytest.mark.parametrize("faults", [{"nope"}, {"flag-off"}, {"flag-off="}, {"hang=x"}])
def test_config_refuses_unknown_faults(faults: set[str]) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        DevstackConfig(faults=frozenset(faults))


def test_config_refuses_nonsense_and_hides_the_key() -> None:
    with pytest.raises(ValueError):
        DevstackConfig(completion_tokens=0)
    with pytest.raises(ValueError):
        DevstackConfig(chunk_delay_s=-1)
    assert "s3cret" not in repr(DevstackConfig(api_key="s3cret"))


# --- models ---------------------------------------------------------------------------------------


def test_models_list_is_the_catalog(http: httpx.Client, sdk: openai.OpenAI) -> None:
    assert http.get("/v1/models").json() == CATALOG
    assert [m.id for m in sdk.models.list()] == [m["id"] for m in CATALOG["data"]]
    assert stats(http)["models_requests"] == 2


def test_flag_off_reports_models_not_confidential(http: httpx.Client) -> None:
    set_faults(http, f"flag-off={REASONING_MODEL}", f"flag-off={PLAIN_MODEL}")
    flags = {m["id"]: m["confidential_compute"] for m in http.get("/v1/models").json()["data"]}
    expected = {m["id"]: m["confidential_compute"] for m in CATALOG["data"]}
    expected |= {REASONING_MODEL: False, PLAIN_MODEL: False}
    assert flags == expected
    set_faults(http)
    assert http.get("/v1/models").json() == CATALOG


def test_flag_off_from_config() -> None:
    config = DevstackConfig(faults=frozenset({f"flag-off={PLAIN_MODEL}"}), embeddings=True)
    with serving(build_app(config)) as srv:
        models = httpx.get(srv.url + "/v1/models").json()["data"]
    off = {m["id"] for m in models if not m["confidential_compute"]}
    assert off == {PLAIN_MODEL} | {
        m["id"] for m in CATALOG["data"] if not m["confidential_compute"]
    }


# --- non-stream -----------------------------------------------------------------------------------


def test_same_request_same_answer_and_seeded_by_model_and_messages(http: httpx.Client) -> None:
    first = chat(http)["choices"][0]["message"]["content"]
    assert chat(http)["choices"][0]["message"]["content"] == first
    other_prompt = [{"role": "user", "content": "Say goodbye."}]
    assert chat(http, messages=other_prompt)["choices"][0]["message"]["content"] != first
    other_model = "Qwen/Qwen3-235B-A22B-Instruct-2507-TEE"
    assert chat(http, model=other_model)["choices"][0]["message"]["content"] != first


def test_non_stream_body_shape_and_usage(http: httpx.Client) -> None:
    result = chat(http)
    assert result["id"].startswith("chatcmpl-")
    assert result["object"] == "chat.completion"
    assert result["model"] == PLAIN_MODEL
    choice = result["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["refusal"] is None
    assert "reasoning_content" not in message
    assert len(message["content"].split(" ")) == 24  # one word per token, single spaces
    usage = result["usage"]
    assert usage["prompt_tokens"] == 3 + 3  # ceil(10 bytes / 4) + 3
    assert usage["completion_tokens"] == 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_prompt_tokens_count_text_parts_and_tool_calls_within_bytes(http: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},  # 9 bytes -> 3 + 3
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "héllo wörld"},  # 13 bytes -> 4 + 3
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},  # 7 bytes -> 2 + 3
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "🙂 ok"},  # 7 bytes -> 2 + 3
    ]
    usage = chat(http, messages=messages)["usage"]
    assert usage["prompt_tokens"] == 6 + 7 + 5 + 5
    text_bytes = 9 + 13 + 7 + 7
    assert usage["prompt_tokens"] <= text_bytes + 3 * len(messages)


@pytest.mark.parametrize("text", ["", "a", "ab", "日本語のテキスト", "x" * 1001, "🙂" * 33])
def test_prompt_tokens_never_exceed_bytes_plus_overhead(http: httpx.Client, text: str) -> None:
    usage = chat(http, messages=[{"role": "user", "content": text}])["usage"]
    assert usage["prompt_tokens"] <= len(text.encode()) + 3
    assert usage["prompt_tokens"] == -(-len(text.encode()) // 4) + 3


def test_max_tokens_bounds_the_answer(http: httpx.Client) -> None:
    short = chat(http, max_tokens=5)
    assert len(short["choices"][0]["message"]["content"].split()) == 5
    assert short["usage"]["completion_tokens"] == 5
    assert short["choices"][0]["finish_reason"] == "length"
    newest_wins = chat(http, max_tokens=10, max_completion_tokens=3)
    assert newest_wins["usage"]["completion_tokens"] == 3
    capped = chat(http, max_tokens=500)
    assert capped["usage"]["completion_tokens"] == 24
    assert capped["choices"][0]["finish_reason"] == "stop"


def test_sdk_round_trip(sdk: openai.OpenAI) -> None:
    result = sdk.chat.completions.create(model=PLAIN_MODEL, messages=HELLO, max_tokens=4)
    assert result.choices[0].message.content is not None
    assert len(result.choices[0].message.content.split()) == 4
    assert result.usage is not None
    assert result.usage.completion_tokens == 4


# --- streaming ------------------------------------------------------------------------------------


def test_stream_without_include_usage_has_no_usage(http: httpx.Client) -> None:
    stream = chunks(http)
    assert all("usage" not in chunk for chunk in stream)
    assert stream[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["finish_reason"] for c in stream[:-1]] == [None] * (len(stream) - 1)
    assert stream[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert len(stream) == 1 + 24 + 1  # role, one chunk per token, finish
    assert len({(c["id"], c["created"], c["object"]) for c in stream}) == 1
    assert joined(stream, "content") == chat(http)["choices"][0]["message"]["content"]


def test_stream_with_include_usage_ends_with_a_usage_chunk(http: httpx.Client) -> None:
    stream = chunks(http, stream_options={"include_usage": True}, max_tokens=7)
    *head, last = stream
    assert last["choices"] == []
    assert last["usage"] == chat(http, max_tokens=7)["usage"]
    assert last["usage"]["completion_tokens"] == 7
    assert all(chunk["usage"] is None for chunk in head)
    assert head[-1]["choices"][0]["finish_reason"] == "length"


def test_stream_usage_through_the_sdk(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=PLAIN_MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    received = list(stream)
    assert received[-1].choices == []
    assert received[-1].usage is not None
    assert received[-1].usage.completion_tokens == 24
    assert all(chunk.usage is None for chunk in received[:-1])


def test_chunk_delay_paces_the_stream() -> None:
    with (
        serving(build_app(DevstackConfig(chunk_delay_s=0.05))) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        start = time.monotonic()
        stream = chunks(http, max_tokens=4)
        elapsed = time.monotonic() - start
    assert len(stream) == 6
    assert elapsed >= 5 * 0.05


# --- reasoning ------------------------------------------------------------------------------------


def test_reasoning_model_thinks_before_answering(http: httpx.Client) -> None:
    result = chat(http, model=REASONING_MODEL)
    message = result["choices"][0]["message"]
    assert len(message["reasoning_content"].split()) == 6
    assert len(message["content"].split()) == 18
    usage = result["usage"]
    assert usage["completion_tokens"] == 24
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 6

    stream = chunks(http, model=REASONING_MODEL)
    kinds = [next(iter(c["choices"][0]["delta"]), None) for c in stream]
    assert kinds == ["role"] + ["reasoning_content"] * 6 + ["content"] * 18 + [None]
    assert joined(stream, "reasoning_content") == message["reasoning_content"]
    assert joined(stream, "content") == message["content"]


def test_reasoning_fits_inside_max_tokens(http: httpx.Client) -> None:
    result = chat(http, model=REASONING_MODEL, max_completion_tokens=1)
    assert result["usage"]["completion_tokens"] == 1
    assert "reasoning_content" not in result["choices"][0]["message"]


def test_reasoning_through_the_sdk(sdk: openai.OpenAI) -> None:
    result = sdk.chat.completions.create(model=REASONING_MODEL, messages=HELLO)
    extra = result.choices[0].message.model_extra or {}
    assert len(extra["reasoning_content"].split()) == 6


# --- tools ----------------------------------------------------------------------------------------


def check_weather_arguments(arguments: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(arguments)
    jsonschema.Draft202012Validator(
        WEATHER_PARAMETERS, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(parsed)
    return parsed


def test_tool_call_non_stream(http: httpx.Client) -> None:
    result = chat(http, tools=TOOLS, parallel_tool_calls=False)
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = check_weather_arguments(call["function"]["arguments"])
    assert set(arguments) == set(WEATHER_PARAMETERS["properties"])
    again = chat(http, tools=TOOLS, parallel_tool_calls=False)
    assert again["choices"][0]["message"]["tool_calls"] == [call]


def test_tool_choice_selects_the_function(http: httpx.Client) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    [call] = chat(http, tools=TOOLS, tool_choice=named)["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_time"
    assert isinstance(json.loads(call["function"]["arguments"])["zone"], str)
    required = chat(http, tools=TOOLS, tool_choice="required")["choices"][0]
    assert required["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    none = chat(http, tools=TOOLS, tool_choice="none")["choices"][0]
    assert "tool_calls" not in none["message"]
    assert none["finish_reason"] == "stop"
    assert none["message"]["content"]


def test_tool_call_stream_arrives_like_openai(http: httpx.Client) -> None:
    stream = chunks(
        http, tools=TOOLS, parallel_tool_calls=False, stream_options={"include_usage": True}
    )
    deltas = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in stream
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    head, *fragments = (d[0] for d in deltas)
    assert head["index"] == 0
    assert head["id"].startswith("call_")
    assert head["type"] == "function"
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    assert all(set(f) == {"index", "function"} for f in fragments)
    arguments = "".join(f["function"]["arguments"] for f in fragments)
    check_weather_arguments(arguments)
    assert stream[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream[-1]["usage"]["completion_tokens"] == len(fragments)
    assert len(fragments) > 1


def test_tool_call_stream_through_the_sdk(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=REASONING_MODEL, messages=HELLO, tools=TOOLS, parallel_tool_calls=False, stream=True
    )
    names: list[str] = []
    arguments = ""
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for call in choice.delta.tool_calls or []:
            assert call.function is not None
            names += [call.function.name] if call.function.name else []
            arguments += call.function.arguments or ""
    assert names == ["get_weather"]
    assert finish == "tool_calls"
    check_weather_arguments(arguments)


def test_tool_arguments_stay_valid_under_a_tiny_budget(http: httpx.Client) -> None:
    result = chat(http, tools=TOOLS, max_tokens=2)
    assert result["usage"]["completion_tokens"] <= 2
    check_weather_arguments(
        result["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    )


# --- JSON modes -----------------------------------------------------------------------------------

SCHEMAS: list[dict[str, Any]] = [
    WEATHER_PARAMETERS,
    {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": -1}, "minItems": 3},
    {"type": "string", "enum": ["yes", "no"]},
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 4},
            "tree": {"$ref": "#"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "score": {"type": ["number", "null"], "minimum": 0.5, "maximum": 0.5},
            "kind": {"const": "leaf"},
            "both": {"allOf": [{"properties": {"a": {"type": "boolean"}}, "required": ["a"]}]},
        },
        "required": ["name", "kind", "both"],
        "additionalProperties": False,
    },
]


def test_json_object_mode(http: httpx.Client) -> None:
    content = chat(http, response_format={"type": "json_object"})["choices"][0]["message"]
    assert isinstance(json.loads(content["content"]), dict)
    stream = chunks(http, response_format={"type": "json_object"})
    assert json.loads(joined(stream, "content")) == json.loads(content["content"])
    assert sum(1 for c in stream if c["choices"] and c["choices"][0]["delta"].get("content")) > 1


@pytest.mark.parametrize("schema", SCHEMAS, ids=["weather", "array", "enum", "recursive"])
def test_json_schema_mode(http: httpx.Client, schema: dict[str, Any]) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    result = chat(http, model=REASONING_MODEL, response_format=response_format)
    content = result["choices"][0]["message"]["content"]
    jsonschema.Draft202012Validator(schema).validate(json.loads(content))
    stream = chunks(http, model=REASONING_MODEL, response_format=response_format)
    assert joined(stream, "content") == content
    tiny = chat(http, response_format=response_format, max_tokens=1)
    assert tiny["usage"]["completion_tokens"] == 1
    jsonschema.Draft202012Validator(schema).validate(
        json.loads(tiny["choices"][0]["message"]["content"])
    )


# --- errors and the request counter ---------------------------------------------------------------

BAD_REQUESTS = [
    (b"{not json", 400, "invalid_json", None),
    (b"[]", 400, "invalid_type", None),
    (json.dumps({"messages": HELLO}).encode(), 400, "missing_required_parameter", "model"),
    (json.dumps({"model": PLAIN_MODEL}).encode(), 400, "missing_required_parameter", "messages"),
    (json.dumps(body(messages=[])).encode(), 400, "invalid_type", "messages"),
    (json.dumps(body(messages=["hi"])).encode(), 400, "invalid_type", "messages[0]"),
    (json.dumps(body(max_tokens=0)).encode(), 400, "invalid_value", "max_tokens"),
    (json.dumps(body(stream="yes")).encode(), 400, "invalid_type", "stream"),
    (
        json.dumps(
            body(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}})
        ).encode(),
        400,
        "invalid_value",
        "tool_choice",
    ),
    (
        json.dumps(body(response_format={"type": "yaml"})).encode(),
        400,
        "invalid_value",
        "response_format",
    ),
    (json.dumps(body(model="no/such-model")).encode(), 404, "model_not_found", "model"),
]


@pytest.mark.parametrize(("raw", "status", "code", "param"), BAD_REQUESTS)
def test_bad_requests_get_an_envelope_and_are_counted(
    http: httpx.Client, raw: bytes, status: int, code: str, param: str | None
) -> None:
    response = http.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert stats(http) == {
        "chat_requests": 1,
        "embeddings_requests": 0,
        "models_requests": 0,
        "chat_in_flight": 0,
    }


def test_api_key_is_enforced_and_refusals_are_counted() -> None:
    with (
        serving(build_app(DevstackConfig(api_key="sk-up"))) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        for headers in ({}, {"authorization": "Bearer sk-wrong"}, {"authorization": "sk-up"}):
            for method, path in (("POST", CHAT), ("GET", "/v1/models")):
                response = http.request(method, path, json=body(), headers=headers)
                assert response.status_code == 401
                assert response.json()["error"]["code"] == "invalid_api_key"
        good = {"authorization": "Bearer sk-up"}
        assert http.post(CHAT, json=body(), headers=good).status_code == 200
        assert http.get("/v1/models", headers=good).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="nope", max_retries=0).models.list()
        assert stats(http) == {
            "chat_requests": 4,
            "embeddings_requests": 0,
            "models_requests": 5,
            "chat_in_flight": 0,
        }


# --- faults ---------------------------------------------------------------------------------------


def test_http_500(http: httpx.Client, sdk: openai.OpenAI) -> None:
    set_faults(http, "http-500")
    response = http.post(CHAT, json=body())
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model=PLAIN_MODEL, messages=HELLO)
    assert stats(http)["chat_requests"] == 2


def test_no_usage_ever(http: httpx.Client, sdk: openai.OpenAI) -> None:
    set_faults(http, "no-usage")
    assert "usage" not in chat(http)
    assert sdk.chat.completions.create(model=PLAIN_MODEL, messages=HELLO).usage is None
    stream = chunks(http, stream_options={"include_usage": True})
    assert all("usage" not in chunk for chunk in stream)
    assert stream[-1]["choices"][0]["finish_reason"] == "stop"


def test_slow_first_token_non_stream(http: httpx.Client) -> None:
    start = time.monotonic()
    chat(http)
    fast = time.monotonic() - start
    set_faults(http, "slow-first-token")
    start = time.monotonic()
    chat(http)
    assert time.monotonic() - start >= 0.3 > fast


def test_slow_first_token_stream_sends_headers_then_waits(http: httpx.Client) -> None:
    set_faults(http, "slow-first-token")
    start = time.monotonic()
    with http.stream("POST", CHAT, json=body(stream=True)) as response:
        headers_s = time.monotonic() - start
        lines = response.iter_lines()
        first = next(lines)
        first_s = time.monotonic() - start
        rest = list(lines)
    assert first.startswith("data: {")
    assert first_s >= 0.3
    assert headers_s < first_s - 0.2
    assert "data: [DONE]" in rest


def test_garbage_sse_interleaves_invalid_json(http: httpx.Client) -> None:
    clean = chunks(http)
    set_faults(http, "garbage-sse")
    lines = data_lines(http)
    assert lines[-1] == "[DONE]"
    garbage = []
    parsed = []
    for line in lines[:-1]:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            garbage.append(line)
    assert garbage == ["{not json"]
    assert 0 < lines.index("{not json") < len(lines) - 2  # in the middle
    assert joined(parsed, "content") == joined(clean, "content")


def test_drop_mid_stream_aborts_the_transfer(http: httpx.Client) -> None:
    set_faults(http, "drop-mid-stream")
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream(
            "POST", CHAT, json=body(stream=True, stream_options={"include_usage": True})
        ) as response,
    ):
        received.extend(line for line in response.iter_lines() if line)
    assert len(received) >= 2
    assert "data: [DONE]" not in received
    chunks_seen = [json.loads(line[6:]) for line in received]
    assert all(c["choices"] and c["choices"][0]["finish_reason"] is None for c in chunks_seen)
    assert len(chunks_seen) < 24


def test_drop_mid_stream_as_the_sdk_sees_it(http: httpx.Client, sdk: openai.OpenAI) -> None:
    set_faults(http, "drop-mid-stream")
    with pytest.raises(openai.APIConnectionError):
        list(sdk.chat.completions.create(model=PLAIN_MODEL, messages=HELLO, stream=True))


async def test_drop_mid_stream_as_aiohttp_sees_it(upstream: ServerThread) -> None:
    async with aiohttp.ClientSession() as session:
        await session.put(upstream.url + "/admin/faults", json={"faults": ["drop-mid-stream"]})
        response = await session.post(upstream.url + CHAT, json=body(stream=True))
        async with response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for _line in response.content:
                    pass


def test_hang_waits_for_the_client_and_leaves_nothing_running(http: httpx.Client) -> None:
    set_faults(http, "hang")
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=0.3) as impatient:
        impatient.post(http.base_url.join(CHAT), json=body())
    assert stats(http)["chat_requests"] == 1
    assert wait_until_idle(http, within_s=2) < 2


def test_client_disconnect_stops_the_stream_promptly() -> None:
    config = DevstackConfig(chunk_delay_s=0.05, completion_tokens=400)  # a 20 s stream
    with serving(build_app(config)) as srv, httpx.Client(base_url=srv.url) as http:
        with http.stream("POST", CHAT, json=body(stream=True)) as response:
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
            assert stats(http)["chat_in_flight"] == 1
        assert wait_until_idle(http, within_s=1) < 1


# --- admin ----------------------------------------------------------------------------------------


def test_admin_faults_replace_the_set(http: httpx.Client) -> None:
    assert http.get("/admin/faults").json() == {"faults": []}
    wanted = ["no-usage", f"flag-off={PLAIN_MODEL}", "garbage-sse"]
    response = http.put("/admin/faults", json={"faults": wanted})
    assert response.json() == {"faults": sorted(wanted)}
    assert http.get("/admin/faults").json() == {"faults": sorted(wanted)}
    assert http.put("/admin/faults", json={"faults": ["hang"]}).json() == {"faults": ["hang"]}


@pytest.mark.parametrize(
    "payload",
    [{"faults": ["no-usage", "bogus"]}, {"faults": ["flag-off"]}, {"faults": "hang"}, {}, []],
)
def test_admin_faults_refuse_bad_input_and_change_nothing(http: httpx.Client, payload: Any) -> None:
    set_faults(http, "no-usage")
    response = http.put("/admin/faults", json=payload)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "faults"
    assert http.get("/admin/faults").json() == {"faults": ["no-usage"]}


def test_admin_reset_restores_initial_faults_and_zeroes_counters() -> None:
    config = DevstackConfig(faults=frozenset({"no-usage"}))
    with serving(build_app(config)) as srv, httpx.Client(base_url=srv.url) as http:
        http.post(CHAT, json=body())
        http.get("/v1/models")
        set_faults(http, "http-500", "hang")
        assert stats(http) == {
            "chat_requests": 1,
            "embeddings_requests": 0,
            "models_requests": 1,
            "chat_in_flight": 0,
        }
        http.post("/admin/reset").raise_for_status()
        assert stats(http) == {
            "chat_requests": 0,
            "embeddings_requests": 0,
            "models_requests": 0,
            "chat_in_flight": 0,
        }
        assert http.get("/admin/faults").json() == {"faults": ["no-usage"]}


async def test_admin_is_loopback_only() -> None:
    transport = httpx.ASGITransport(app=build_app(DevstackConfig()), client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://devstack") as client:
        assert (await client.get("/admin/stats")).status_code == 403
        assert (await client.put("/admin/faults", json={"faults": ["hang"]})).status_code == 403
        assert (await client.get("/v1/models")).status_code == 200


# --- OpenAI schema conformance --------------------------------------------------------------------


def test_schema_helper_rejects_what_openai_would_not_send() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "usage": None,
    }
    validate(chunk | {"choices": []}, "CreateChatCompletionStreamResponse")
    bad_finish = {"index": 0, "delta": {}, "finish_reason": "done"}
    with pytest.raises(SchemaMismatch):
        validate(chunk | {"choices": [bad_finish]}, "CreateChatCompletionStreamResponse")
    with pytest.raises(SchemaMismatch):
        validate({"id": "c", "object": "chat.completion"}, "CreateChatCompletionResponse")


COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


def test_sdk_validation_accepts_what_the_sdk_builds_and_teegates_extensions() -> None:
    validate_sdk(COMPLETION, "CreateChatCompletionResponse")
    reasoned = json.loads(json.dumps(COMPLETION))
    reasoned["choices"][0]["message"]["reasoning_content"] = "Thinking."
    validate_sdk(reasoned, "CreateChatCompletionResponse")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("choices", 0, "finish_reason"), None),  # required: the SDK's Choice declares it
        (("created",), "1"),  # the SDK builds an int; strict mode does not coerce
        (("usage", "total_tokens"), 3.5),
        (("choices", 0, "message", "tool_calls"), {"id": "x"}),  # a list in the SDK
        (("choices", 0, "message", "thoughts"), "x"),  # a field the SDK does not have
        (("choices", 0, "surprise"), 1),
    ],
    ids=["missing", "string-for-int", "float-for-int", "object-for-list", "extra", "extra-deep"],
)
def test_sdk_validation_rejects_missing_mistyped_and_unknown_fields(
    path: tuple[str | int, ...], value: object
) -> None:
    """The SDK half alone, so this fails even with no OpenAPI document to lean on."""
    broken = json.loads(json.dumps(COMPLETION))
    parent = broken
    for step in path[:-1]:
        parent = parent[step]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(SchemaMismatch):
        validate_sdk(broken, "CreateChatCompletionResponse")


def test_sdk_validation_of_models_and_errors() -> None:
    model = {"id": "m", "object": "model", "created": 1, "owned_by": "o"}
    validate_sdk({"object": "list", "data": [model]}, "ListModelsResponse")
    with pytest.raises(SchemaMismatch):
        validate_sdk({"object": "list", "data": [model | {"created": "1"}]}, "ListModelsResponse")
    with pytest.raises(SchemaMismatch):
        validate_sdk(model | {"root": "m"}, "Model")
    error = {"message": "No.", "type": "invalid_request_error", "param": None, "code": None}
    validate_sdk({"error": error}, "ErrorResponse")
    with pytest.raises(SchemaMismatch):
        validate_sdk({"error": error, "detail": "x"}, "ErrorResponse")
    with pytest.raises(SchemaMismatch):
        validate_sdk({"error": {"message": "No."}}, "ErrorResponse")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"model": REASONING_MODEL, "stream_options": {"include_usage": True}},
        {"tools": TOOLS, "stream_options": {"include_usage": True}},
        {"model": REASONING_MODEL, "tools": TOOLS},
        {"response_format": {"type": "json_object"}, "max_tokens": 3},
    ],
    ids=["text", "reasoning", "tools", "reasoning-tools", "json"],
)
def test_every_body_and_chunk_matches_openai_schemas(
    http: httpx.Client, fields: dict[str, Any]
) -> None:
    chat(http, **fields)  # validates the body
    stream = chunks(http, **fields)  # validates each chunk
    assert stream
