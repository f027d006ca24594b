"""chat/_request.py: every validation branch names its `param` and `code`; defaults apply."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from teegate.catalog import Capabilities, CatalogModel, Price
from teegate.chat import ChatRequest, check_against_model, parse_chat_request
from teegate.config import RequestDefaults
from teegate.errors import InvalidRequest

DEFAULTS = RequestDefaults()
USER = {"role": "user", "content": "hi"}


def body(**fields: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"model": "m-TEE", "messages": [USER]}
    request.update(fields)
    return request


def parse(request: Any, defaults: RequestDefaults = DEFAULTS) -> ChatRequest:
    return parse_chat_request(orjson.dumps(request), defaults)


def refused(request: Any) -> InvalidRequest:
    raw = request if isinstance(request, bytes) else orjson.dumps(request)
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(raw, DEFAULTS)
    error = info.value
    assert type(error) is InvalidRequest
    assert error.status == 400
    assert error.type == "invalid_request_error"
    return error


# the whole body -----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b'{"model": "m",}', b"\xff\xfe", b'{"a": NaN}']
)
def test_invalid_json(raw: bytes) -> None:
    error = refused(raw)
    assert (error.error_code, error.param) == ("invalid_json", None)
    assert "not valid JSON" in error.message


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"text"', b"42", b"[{}]"])
def test_body_must_be_an_object(raw: bytes) -> None:
    error = refused(raw)
    assert (error.error_code, error.param) == ("invalid_json", None)
    assert error.message == "The request body must be a JSON object."


# field by field -----------------------------------------------------------------

MISSING = "missing_required_parameter"
TYPE = "invalid_type"
VALUE = "invalid_value"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # id, request, param, code
    ("model missing", {"messages": [USER]}, "model", MISSING),
    ("model null", body(model=None), "model", MISSING),
    ("model empty", body(model=""), "model", TYPE),
    ("model number", body(model=7), "model", TYPE),
    ("model list", body(model=["m"]), "model", TYPE),
    ("messages missing", {"model": "m"}, "messages", MISSING),
    ("messages object", body(messages={"role": "user"}), "messages", TYPE),
    ("messages string", body(messages="hi"), "messages", TYPE),
    ("messages empty", body(messages=[]), "messages", "empty_array"),
    ("message string", body(messages=["hi"]), "messages[0]", TYPE),
    ("message null", body(messages=[USER, None]), "messages[1]", MISSING),
    ("role missing", body(messages=[{"content": "hi"}]), "messages[0].role", MISSING),
    ("role unknown", body(messages=[{"role": "bot", "content": "x"}]), "messages[0].role", VALUE),
    ("role case", body(messages=[{"role": "User", "content": "x"}]), "messages[0].role", VALUE),
    ("role number", body(messages=[{"role": 1, "content": "x"}]), "messages[0].role", VALUE),
    ("content missing", body(messages=[USER, {"role": "user"}]), "messages[1].content", MISSING),
    (
        "assistant content missing without tool calls",
        body(messages=[{"role": "assistant"}]),
        "messages[0].content",
        MISSING,
    ),
    (
        "assistant empty tool calls",
        body(messages=[{"role": "assistant", "content": None, "tool_calls": []}]),
        "messages[0].content",
        MISSING,
    ),
    (
        "content number",
        body(messages=[{"role": "user", "content": 5}]),
        "messages[0].content",
        TYPE,
    ),
    (
        "content object",
        body(messages=[{"role": "user", "content": {"type": "text"}}]),
        "messages[0].content",
        TYPE,
    ),
    (
        "content part string",
        body(messages=[{"role": "user", "content": ["hi"]}]),
        "messages[0].content[0]",
        TYPE,
    ),
    (
        "content part without type",
        body(
            messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]
        ),
        "messages[0].content[1]",
        TYPE,
    ),
    (
        "content part type not a string",
        body(messages=[{"role": "user", "content": [{"type": 1}]}]),
        "messages[0].content[0]",
        TYPE,
    ),
    (
        "content part of a type no model reads",
        body(messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}]),
        "messages[0].content[0].type",
        VALUE,
    ),
    (
        "content part null",
        body(messages=[{"role": "user", "content": [None]}]),
        "messages[0].content[0]",
        MISSING,
    ),
    (
        "tool message without tool_call_id",
        body(messages=[{"role": "tool", "content": "42"}]),
        "messages[0].tool_call_id",
        MISSING,
    ),
    (
        "tool message with numeric tool_call_id",
        body(messages=[{"role": "tool", "content": "42", "tool_call_id": 3}]),
        "messages[0].tool_call_id",
        TYPE,
    ),
    ("temperature string", body(temperature="hot"), "temperature", TYPE),
    ("temperature bool", body(temperature=True), "temperature", TYPE),
    ("temperature low", body(temperature=-0.1), "temperature", VALUE),
    ("temperature high", body(temperature=2.01), "temperature", VALUE),
    ("top_p high", body(top_p=1.5), "top_p", VALUE),
    ("top_p negative", body(top_p=-1), "top_p", VALUE),
    ("top_p list", body(top_p=[1]), "top_p", TYPE),
    ("presence_penalty low", body(presence_penalty=-2.5), "presence_penalty", VALUE),
    ("presence_penalty high", body(presence_penalty=3), "presence_penalty", VALUE),
    ("frequency_penalty high", body(frequency_penalty=2.1), "frequency_penalty", VALUE),
    ("frequency_penalty string", body(frequency_penalty="0"), "frequency_penalty", TYPE),
    ("max_tokens zero", body(max_tokens=0), "max_tokens", VALUE),
    ("max_tokens negative", body(max_tokens=-5), "max_tokens", VALUE),
    ("max_tokens float", body(max_tokens=10.0), "max_tokens", TYPE),
    ("max_tokens string", body(max_tokens="10"), "max_tokens", TYPE),
    ("max_tokens bool", body(max_tokens=True), "max_tokens", TYPE),
    ("max_completion_tokens zero", body(max_completion_tokens=0), "max_completion_tokens", VALUE),
    ("max_completion_tokens float", body(max_completion_tokens=1.5), "max_completion_tokens", TYPE),
    ("n zero", body(n=0), "n", VALUE),
    ("n above the bound", body(n=9), "n", VALUE),
    ("n float", body(n=2.0), "n", TYPE),
    ("stream string", body(stream="true"), "stream", TYPE),
    ("stream number", body(stream=1), "stream", TYPE),
    (
        "stream_options without stream",
        body(stream_options={"include_usage": True}),
        "stream_options",
        VALUE,
    ),
    (
        "stream_options with stream false",
        body(stream=False, stream_options={"include_usage": True}),
        "stream_options",
        VALUE,
    ),
    (
        "stream_options not an object",
        body(stream=True, stream_options=True),
        "stream_options",
        TYPE,
    ),
    (
        "include_usage not a boolean",
        body(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        TYPE,
    ),
    ("tools object", body(tools=TOOL), "tools", TYPE),
    ("tools string", body(tools="f"), "tools", TYPE),
    (
        "tool without function",
        body(tools=[TOOL, {"type": "function"}]),
        "tools[1].function",
        MISSING,
    ),
    ("tool not an object", body(tools=["f"]), "tools[0].function", MISSING),
    (
        "tool function without name",
        body(tools=[{"type": "function", "function": {"parameters": {}}}]),
        "tools[0].function",
        TYPE,
    ),
    (
        "tool function name not a string",
        body(tools=[{"type": "function", "function": {"name": 3}}]),
        "tools[0].function",
        TYPE,
    ),
    ("response_format string", body(response_format="json"), "response_format", VALUE),
    ("response_format without type", body(response_format={}), "response_format", VALUE),
    (
        "response_format unknown type",
        body(response_format={"type": "yaml"}),
        "response_format",
        VALUE,
    ),
    (
        "json_schema missing",
        body(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        MISSING,
    ),
]


@pytest.mark.parametrize(
    ("request_body", "param", "code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_validation(request_body: dict[str, Any], param: str, code: str) -> None:
    error = refused(request_body)
    assert (error.param, error.error_code) == (param, code)
    assert param in error.message
    envelope = error.envelope()["error"]
    assert (envelope["param"], envelope["code"], envelope["status"]) == (param, code, 400)


def test_messages_never_reach_the_error_message() -> None:
    secret = "my secret prompt text"
    error = refused(body(messages=[{"role": "user", "content": secret}, {"role": "wizard"}]))
    assert secret not in error.message
    assert "wizard" not in error.message


# bugs: unhashable values must be a 400, not a TypeError (which becomes a 500) ------


@pytest.mark.parametrize("role", [["user"], {"name": "user"}])
def test_unhashable_role_is_an_invalid_value(role: object) -> None:
    error = refused(body(messages=[{"role": role, "content": "x"}]))
    assert (error.param, error.error_code) == ("messages[0].role", VALUE)


@pytest.mark.parametrize("kind", [["json_object"], {"json": True}])
def test_unhashable_response_format_type_is_an_invalid_value(kind: object) -> None:
    error = refused(body(response_format={"type": kind}))
    assert (error.param, error.error_code) == ("response_format", VALUE)


def test_json_schema_of_the_wrong_type_is_an_invalid_type() -> None:
    error = refused(body(response_format={"type": "json_schema", "json_schema": "schema"}))
    assert (error.param, error.error_code) == ("response_format.json_schema", TYPE)


# what passes ----------------------------------------------------------------------


def test_minimal_request_gets_the_defaults() -> None:
    request = parse(body())
    assert request.model == "m-TEE"
    assert (request.stream, request.include_usage) == (False, False)
    assert request.needs == Capabilities(())
    assert request.body["max_tokens"] == 1024
    assert request.body["temperature"] == 0.7
    assert request.body["top_p"] == 1
    assert "max_completion_tokens" not in request.body
    assert request.max_output_tokens() == 1024
    assert request.choices() == 1


def test_configured_defaults_apply() -> None:
    defaults = RequestDefaults(max_tokens=64, temperature=0.2, top_p=0.9)
    request = parse(body(), defaults)
    assert (request.body["max_tokens"], request.body["temperature"], request.body["top_p"]) == (
        64,
        0.2,
        0.9,
    )


def test_given_values_are_kept() -> None:
    request = parse(body(max_tokens=10, temperature=0, top_p=0.5, n=3))
    assert (request.body["max_tokens"], request.body["temperature"], request.body["top_p"]) == (
        10,
        0,
        0.5,
    )
    assert request.choices() == 3


def test_nulls_get_defaults() -> None:
    request = parse(body(max_tokens=None, temperature=None, top_p=None))
    assert (request.body["max_tokens"], request.body["temperature"], request.body["top_p"]) == (
        1024,
        0.7,
        1,
    )


def test_max_completion_tokens_replaces_the_max_tokens_default() -> None:
    request = parse(body(max_completion_tokens=77))
    assert "max_tokens" not in request.body
    assert request.max_output_tokens() == 77
    both = parse(body(max_tokens=10, max_completion_tokens=20))
    assert both.max_output_tokens() == 20


def test_unknown_fields_are_preserved() -> None:
    extra = {
        "seed": 7,
        "user": "u-1",
        "logit_bias": {"50256": -100},
        "tool_choice": "auto",
        "vendor_flag": {"nested": [1, 2, 3]},
        "stop": ["\n\n"],
    }
    request = parse(body(**extra))
    for key, value in extra.items():
        assert request.body[key] == value
    assert request.body["messages"] == [USER]


@pytest.mark.parametrize(
    "bounds",
    [
        {"temperature": 0, "top_p": 0, "presence_penalty": -2, "frequency_penalty": -2, "n": 1},
        {"temperature": 2, "top_p": 1, "presence_penalty": 2, "frequency_penalty": 2, "n": 8},
    ],
)
def test_bounds_are_inclusive(bounds: dict[str, Any]) -> None:
    request = parse(body(**bounds, max_tokens=1))
    for key, value in bounds.items():
        assert request.body[key] == value


@pytest.mark.parametrize(
    "message",
    [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
        {"role": "function", "content": "42", "name": "f"},
    ],
)
def test_accepted_messages(message: dict[str, Any]) -> None:
    assert parse(body(messages=[message])).body["messages"] == [message]


@pytest.mark.parametrize(
    ("fields", "stream", "include_usage"),
    [
        ({"stream": True}, True, False),
        ({"stream": False}, False, False),
        ({"stream": None}, False, False),
        ({"stream": True, "stream_options": {}}, True, False),
        ({"stream": True, "stream_options": {"include_usage": False}}, True, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, True, True),
        ({"stream": False, "stream_options": None}, False, False),
    ],
)
def test_stream_flags(fields: dict[str, Any], stream: bool, include_usage: bool) -> None:
    request = parse(body(**fields))
    assert (request.stream, request.include_usage) == (stream, include_usage)


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


@pytest.mark.parametrize(
    ("fields", "needs"),
    [
        ({"tools": [TOOL]}, (("tools", "tools"),)),
        ({"tools": []}, ()),
        ({"response_format": {"type": "text"}}, ()),
        ({"response_format": {"type": "json_object"}}, (("json_mode", "response_format"),)),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "s"}}},
            (("structured_outputs", "response_format"),),
        ),
        (
            {"tools": [TOOL], "response_format": {"type": "json_object"}},
            (("tools", "tools"), ("json_mode", "response_format")),
        ),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}, ()),
        (
            {"messages": [{"role": "user", "content": [IMAGE, {"type": "text", "text": "a"}]}]},
            (("vision", "messages"),),
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [IMAGE, IMAGE]},
                    {"role": "user", "content": [{"type": "input_audio"}, {"type": "file"}]},
                    {"role": "user", "content": [IMAGE]},
                ],
                "tools": [TOOL],
            },
            (
                ("tools", "tools"),
                ("vision", "messages"),
                ("audio", "messages"),
                ("file", "messages"),
            ),
        ),
    ],
    ids=["tools", "no-tools", "text", "json", "schema", "both", "text-part", "image", "media"],
)
def test_capability_needs(fields: dict[str, Any], needs: tuple[tuple[str, str], ...]) -> None:
    assert parse(body(**fields)).needs == Capabilities(needs)


# check_against_model ----------------------------------------------------------------


def catalog_model(max_output_length: int) -> CatalogModel:
    return CatalogModel(
        id="m-TEE",
        upstream="up",
        confidential=True,
        context_length=8192,
        max_output_length=max_output_length,
        tags=frozenset(),
        price=Price(1, 1),
        upstream_price=Price(1, 1),
        created=0,
        owned_by="up",
        description="",
    )


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_check_against_model_refuses_too_many_output_tokens(field: str) -> None:
    request = parse(body(**{field: 4097}))
    with pytest.raises(InvalidRequest) as info:
        check_against_model(request, catalog_model(4096))
    error = info.value
    assert (error.param, error.error_code, error.status) == (field, VALUE, 400)
    assert "4097" in error.message
    assert "4096" in error.message


def test_check_against_model_accepts_the_limit() -> None:
    check_against_model(parse(body(max_tokens=4096)), catalog_model(4096))
    check_against_model(parse(body(max_completion_tokens=4096)), catalog_model(4096))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logprobs", "yes"),
        ("parallel_tool_calls", "no"),
        ("store", 1),
        ("user", 5),
        ("reasoning_effort", 5),
        ("seed", "1"),
        ("seed", True),
        ("logit_bias", [1]),
        ("metadata", "x"),
        ("modalities", "text"),
        ("tool_choice", 5),
    ],
)
def test_forwarded_fields_are_held_to_their_types(field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(body(**{field: value}))
    assert info.value.param == field
    assert info.value.error_code == "invalid_type"


@pytest.mark.parametrize(
    "fields",
    [
        {"logprobs": True, "seed": 7, "user": "u", "store": False},
        {"tool_choice": "auto", "parallel_tool_calls": False, "metadata": {"a": "b"}},
        {"logit_bias": {"50256": -100}, "modalities": ["text"], "reasoning_effort": "low"},
    ],
)
def test_forwarded_fields_of_the_right_type_pass(fields: dict[str, Any]) -> None:
    assert parse(body(**fields)).body.items() >= fields.items()
