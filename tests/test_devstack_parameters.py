"""The simulated upstream honours OpenAI's generation parameters, in bodies and streams:
`stop`, `n`, `logprobs` + `top_logprobs`, `seed`, `parallel_tool_calls` and
`max_completion_tokens`; out-of-bounds values get OpenAI's 400 envelope."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from teegate.devstack import DevstackConfig, build_app
from tests.support.openai_schemas import validate
from tests.support.servers import serving

PLAIN_MODEL = "deepseek-ai/DeepSeek-V3-0324-TEE"
REASONING_MODEL = "deepseek-ai/DeepSeek-V3.2-TEE"
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello."}]
TOKENS = 24  # DevstackConfig's default completion_tokens


def function(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


TOOLS = [
    function("get_weather", {"city": {"type": "string"}}),
    function("get_time", {"zone": {"type": "string"}}),
    function("get_news", {"topic": {"type": "string"}, "count": {"type": "integer"}}),
]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with (
        serving(build_app(DevstackConfig(first_token_delay_s=0.3))) as server,
        httpx.Client(base_url=server.url, timeout=5) as client,
    ):
        yield client


def body(**fields: Any) -> dict[str, Any]:
    return {"model": PLAIN_MODEL, "messages": HELLO} | fields


def chat(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    """A non-stream answer, valid against OpenAI's schema and the SDK's own types."""
    response = http.post(CHAT, json=body(**fields))
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    validate(payload, "CreateChatCompletionResponse")
    ChatCompletion.model_validate(payload, strict=True)
    return payload


def stream(http: httpx.Client, **fields: Any) -> list[dict[str, Any]]:
    """Every chunk of a complete stream, each valid like `chat`'s body."""
    with http.stream("POST", CHAT, json=body(stream=True, **fields)) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
        ChatCompletionChunk.model_validate(chunk, strict=True)
    return chunks


def refusal(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = http.post(CHAT, json=body(**fields))
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def content(payload: dict[str, Any], index: int = 0) -> str:
    text: str = payload["choices"][index]["message"]["content"]
    return text


def deltas(chunks: list[dict[str, Any]], index: int = 0) -> list[dict[str, Any]]:
    """The choice objects of choice `index`, in order."""
    return [choice for c in chunks for choice in c["choices"] if choice["index"] == index]


def streamed(chunks: list[dict[str, Any]], field: str, index: int = 0) -> str:
    return "".join(choice["delta"].get(field) or "" for choice in deltas(chunks, index))


def finish(chunks: list[dict[str, Any]], index: int = 0) -> str:
    reasons: list[str] = [c["finish_reason"] for c in deltas(chunks, index) if c["finish_reason"]]
    assert len(reasons) == 1
    return reasons[0]


# --- stop -----------------------------------------------------------------------------------------


def test_stop_ends_the_answer_before_the_sequence(http: httpx.Client) -> None:
    whole = content(chat(http))
    words = whole.split(" ")
    stop = " " + words[8]
    start = whole.find(stop)
    cut = chat(http, stop=[stop])
    assert content(cut) == whole[:start]
    assert cut["choices"][0]["finish_reason"] == "stop"
    # the tokens up to the one completing the stop sequence were generated, so they count
    assert cut["usage"]["completion_tokens"] == len(whole[:start].split(" ")) + 1
    assert content(chat(http, stop=stop)) == whole[:start]  # a bare string works too


def test_stop_inside_a_token_and_the_first_to_end_wins(http: httpx.Client) -> None:
    whole = content(chat(http))
    words = whole.split(" ")
    long, short = " " + " ".join(words[2:5]), words[3][1:3]
    starts = [whole.find(long), whole.find(short)]
    assert starts[0] < starts[1] < starts[1] + len(short) < starts[0] + len(long)
    result = chat(http, stop=[long, short])
    assert content(result) == whole[: starts[1]]  # cut inside words[3]
    assert result["choices"][0]["finish_reason"] == "stop"
    assert chat(http, stop=["never said", ""])["choices"][0]["message"]["content"] == whole


def test_stop_in_a_stream_matches_the_body(http: httpx.Client) -> None:
    fields = {"stop": [" " + content(chat(http)).split(" ")[5]]}
    whole = chat(http, **fields)
    chunks = stream(http, stream_options={"include_usage": True}, **fields)
    assert streamed(chunks, "content") == content(whole)
    assert finish(chunks) == "stop"
    assert chunks[-1]["usage"] == whole["usage"]


def test_stop_cuts_json_and_spares_reasoning(http: httpx.Client) -> None:
    json_text = content(chat(http, response_format={"type": "json_object"}))
    cut = chat(http, response_format={"type": "json_object"}, stop=[":"])
    assert content(cut) == json_text[: json_text.index(":")]
    thinking = chat(http, model=REASONING_MODEL)["choices"][0]["message"]
    stopped = chat(http, model=REASONING_MODEL, stop=[" "])["choices"][0]["message"]
    assert stopped["reasoning_content"] == thinking["reasoning_content"]
    assert stopped["content"] == thinking["content"].split(" ")[0]


@pytest.mark.parametrize(
    ("stop", "code"),
    [
        (["a", "b", "c", "d", "e"], "array_above_max_length"),
        (["a", 1], "invalid_type"),
        ({"a": 1}, "invalid_type"),
    ],
)
def test_bad_stop_is_refused_like_openai(http: httpx.Client, stop: Any, code: str) -> None:
    error = refusal(http, stop=stop)
    assert (error["param"], error["code"]) == ("stop", code)
    assert chat(http, stop=["a", "b", "c", "d"])["choices"]  # four are allowed


# --- n --------------------------------------------------------------------------------------------


def test_n_gives_distinct_choices_and_usage_covers_them_all(http: httpx.Client) -> None:
    single = chat(http)
    result = chat(http, n=3)
    assert [c["index"] for c in result["choices"]] == [0, 1, 2]
    texts = [content(result, index) for index in range(3)]
    assert len(set(texts)) == 3
    assert texts[0] == content(single)  # the first choice is the answer n=1 gives
    usage = result["usage"]
    assert usage["prompt_tokens"] == single["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == 3 * TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + 3 * TOKENS


def test_n_in_a_stream_interleaves_the_choices(http: httpx.Client) -> None:
    whole = chat(http, n=3, model=REASONING_MODEL)
    chunks = stream(http, n=3, model=REASONING_MODEL, stream_options={"include_usage": True})
    assert all(len(c["choices"]) == 1 for c in chunks[:-1])
    assert [c["choices"][0]["index"] for c in chunks[:6]] == [0, 1, 2, 0, 1, 2]
    for index in range(3):
        message = whole["choices"][index]["message"]
        assert deltas(chunks, index)[0]["delta"] == {"role": "assistant", "content": ""}
        assert streamed(chunks, "content", index) == message["content"]
        assert streamed(chunks, "reasoning_content", index) == message["reasoning_content"]
        assert finish(chunks, index) == "stop"
    assert chunks[-1]["usage"] == whole["usage"]
    assert whole["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3 * 6


def test_n_with_tools_calls_them_in_every_choice(http: httpx.Client) -> None:
    result = chat(http, n=2, tools=TOOLS[:1])
    calls = [c["message"]["tool_calls"] for c in result["choices"]]
    assert [len(c) for c in calls] == [1, 1]
    assert calls[0][0]["id"] != calls[1][0]["id"]
    assert all(c["finish_reason"] == "tool_calls" for c in result["choices"])


@pytest.mark.parametrize("n", [0, 129, 1.5, "2"])
def test_n_out_of_bounds_is_refused(http: httpx.Client, n: Any) -> None:
    assert refusal(http, n=n)["param"] == "n"


# --- logprobs -------------------------------------------------------------------------------------


def check_logprob(entry: dict[str, Any], alternatives: int) -> None:
    """One token's entry: a log probability, its bytes, and the most likely tokens."""
    assert entry["logprob"] <= 0
    assert entry["bytes"] == list(entry["token"].encode())
    top = entry["top_logprobs"]
    assert len(top) == alternatives
    if alternatives:
        assert {k: top[0][k] for k in ("token", "logprob", "bytes")} == {
            k: entry[k] for k in ("token", "logprob", "bytes")
        }
    assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
    assert len({t["token"] for t in top}) == alternatives
    assert all(t["bytes"] == list(t["token"].encode()) for t in top)
    assert math.fsum(math.exp(t["logprob"]) for t in top) < 1


def test_logprobs_describe_every_content_token(http: httpx.Client) -> None:
    plain = chat(http)
    result = chat(http, logprobs=True, top_logprobs=5)
    assert content(result) == content(plain)  # asking for them changes no text
    logprobs = result["choices"][0]["logprobs"]
    assert logprobs["refusal"] is None
    entries = logprobs["content"]
    assert len(entries) == result["usage"]["completion_tokens"]
    assert "".join(e["token"] for e in entries) == content(result)
    for entry in entries:
        check_logprob(entry, 5)
    assert chat(http, logprobs=True, top_logprobs=5)["choices"][0]["logprobs"] == logprobs
    without_top = chat(http, logprobs=True)["choices"][0]["logprobs"]["content"]
    assert len(without_top) == len(entries)
    for entry in without_top:
        check_logprob(entry, 0)
    assert chat(http, logprobs=False)["choices"][0]["logprobs"] is None


def test_logprobs_in_a_stream_come_with_each_token(http: httpx.Client) -> None:
    whole = chat(http, logprobs=True, top_logprobs=2, n=2)
    chunks = stream(http, logprobs=True, top_logprobs=2, n=2)
    for index in range(2):
        choices = deltas(chunks, index)
        assert choices[0]["logprobs"] is None and choices[-1]["logprobs"] is None
        entries = [e for c in choices[1:-1] for e in c["logprobs"]["content"]]
        assert all(len(c["logprobs"]["content"]) == 1 for c in choices[1:-1])
        assert entries == whole["choices"][index]["logprobs"]["content"]


def test_logprobs_with_tool_calls_have_no_content(http: httpx.Client) -> None:
    choice = chat(http, logprobs=True, tools=TOOLS[:1])["choices"][0]
    assert choice["logprobs"] == {"content": None, "refusal": None}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 0}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
    ],
)
def test_bad_logprobs_are_refused(http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    assert refusal(http, **fields)["param"] == param


# --- seed -----------------------------------------------------------------------------------------


def test_seed_picks_the_text(http: httpx.Client) -> None:
    first = chat(http, seed=42)
    assert content(chat(http, seed=42)) == content(first)
    assert content(chat(http, seed=43)) != content(first)
    assert content(chat(http)) not in (content(first), content(chat(http, seed=43)))
    assert first["system_fingerprint"] == "fp_devstack"
    chunks = stream(http, seed=42)
    assert streamed(chunks, "content") == content(first)
    assert all(c["system_fingerprint"] == "fp_devstack" for c in chunks)


def test_seed_with_n_keeps_the_choices_apart(http: httpx.Client) -> None:
    result = chat(http, seed=7, n=2)
    assert content(result, 0) == content(chat(http, seed=7))
    assert content(result, 1) != content(result, 0)


@pytest.mark.parametrize("seed", ["42", 4.2, True, 2**63])
def test_bad_seed_is_refused(http: httpx.Client, seed: Any) -> None:
    assert refusal(http, seed=seed)["param"] == "seed"


# --- parallel tool calls --------------------------------------------------------------------------


def test_parallel_tool_calls_call_every_offered_function(http: httpx.Client) -> None:
    result = chat(http, tools=TOOLS)
    choice = result["choices"][0]
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time", "get_news"]
    assert len({c["id"] for c in calls}) == 3
    for call, tool in zip(calls, TOOLS, strict=True):
        arguments = json.loads(call["function"]["arguments"])
        assert set(arguments) == set(tool["function"]["parameters"]["properties"])
    assert choice["finish_reason"] == "tool_calls"
    assert result["usage"]["completion_tokens"] <= TOKENS
    assert chat(http, tools=TOOLS, parallel_tool_calls=True)["choices"][0] == choice


def test_parallel_tool_calls_stream_with_an_index_per_call(http: httpx.Client) -> None:
    whole = chat(http, tools=TOOLS)["choices"][0]["message"]["tool_calls"]
    chunks = stream(http, tools=TOOLS, stream_options={"include_usage": True})
    fragments = [call for c in deltas(chunks) for call in c["delta"].get("tool_calls") or []]
    heads = [f for f in fragments if "id" in f]
    assert [h["index"] for h in heads] == [0, 1, 2]
    assert [h["id"] for h in heads] == [call["id"] for call in whole]
    for index, call in enumerate(whole):
        pieces = [f["function"]["arguments"] for f in fragments if f["index"] == index]
        assert "".join(pieces) == call["function"]["arguments"]
    assert finish(chunks) == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == len(fragments) - len(heads)


def test_parallel_tool_calls_false_makes_one_call(http: httpx.Client) -> None:
    [call] = chat(http, tools=TOOLS, parallel_tool_calls=False)["choices"][0]["message"][
        "tool_calls"
    ]
    assert call["function"]["name"] == "get_weather"
    chunks = stream(http, tools=TOOLS, parallel_tool_calls=False)
    heads = [f for c in deltas(chunks) for f in c["delta"].get("tool_calls") or [] if "id" in f]
    assert [h["index"] for h in heads] == [0]
    assert refusal(http, tools=TOOLS, parallel_tool_calls="no")["param"] == "parallel_tool_calls"


def test_named_tool_or_a_tiny_budget_limits_the_calls(http: httpx.Client) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    calls = chat(http, tools=TOOLS, tool_choice=named)["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_time"]
    tiny = chat(http, tools=TOOLS, max_completion_tokens=2)
    assert len(tiny["choices"][0]["message"]["tool_calls"]) == 2
    assert tiny["usage"]["completion_tokens"] <= 2


# --- max_completion_tokens ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
def test_token_cap_ends_every_choice_with_length(http: httpx.Client, field: str) -> None:
    result = chat(http, n=2, **{field: 5})
    for choice in result["choices"]:
        assert choice["finish_reason"] == "length"
        assert len(choice["message"]["content"].split(" ")) == 5
    assert result["usage"]["completion_tokens"] == 2 * 5
    chunks = stream(http, n=2, stream_options={"include_usage": True}, **{field: 5})
    assert [finish(chunks, index) for index in range(2)] == ["length", "length"]
    assert chunks[-1]["usage"] == result["usage"]


def test_a_stop_inside_the_cap_still_says_stop(http: httpx.Client) -> None:
    capped = content(chat(http, max_completion_tokens=6))
    last = " " + capped.split(" ")[-1]
    result = chat(http, max_completion_tokens=6, stop=[last])
    assert result["choices"][0]["finish_reason"] == "stop"
    assert content(result) == capped[: capped.find(last)]
