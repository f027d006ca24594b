"""chat/_request.py holds `stop` and `top_logprobs` to OpenAI's rules before any credit is
held, and forwards what passes untouched; the hold covers every one of `n` choices."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from teegate.billing import held_completion_tokens
from teegate.chat import parse_chat_request
from teegate.config import RequestDefaults
from teegate.errors import InvalidRequest

USER = {"role": "user", "content": "hi"}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m-TEE", "messages": [USER]} | fields


def refused(request: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(orjson.dumps(request), RequestDefaults())
    error = info.value
    assert (error.status, error.type) == (400, "invalid_request_error")
    return error


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
        ({"stop": ["a", 2]}, "stop", "invalid_type"),
        ({"stop": 7}, "stop", "invalid_type"),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
        ({"logprobs": False, "top_logprobs": 0}, "top_logprobs", "invalid_value"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs", "invalid_value"),
        ({"logprobs": True, "top_logprobs": 1.0}, "top_logprobs", "invalid_type"),
    ],
)
def test_refused_like_openai(fields: dict[str, Any], param: str, code: str) -> None:
    error = refused(body(**fields))
    assert (error.param, error.error_code) == (param, code)


def test_five_stops_say_how_many_are_allowed() -> None:
    message = refused(body(stop=list("abcde"))).message
    assert "maximum length 4" in message and "length 5" in message


@pytest.mark.parametrize(
    "fields",
    [
        {"stop": None},
        {"stop": "\n"},
        {"stop": ["a", "b", "c", "d"]},
        {"logprobs": True},
        {"logprobs": True, "top_logprobs": 0},
        {"logprobs": True, "top_logprobs": 20},
        {"logprobs": False, "top_logprobs": None},
        {"seed": 42, "parallel_tool_calls": False, "n": 3},
    ],
)
def test_allowed_values_are_forwarded_untouched(fields: dict[str, Any]) -> None:
    request = parse_chat_request(orjson.dumps(body(**fields)), RequestDefaults())
    for key, value in fields.items():
        assert request.body[key] == value


def test_the_hold_covers_every_choice() -> None:
    request = parse_chat_request(
        orjson.dumps(body(n=3, max_completion_tokens=40)), RequestDefaults()
    )
    assert request.choices() == 3
    assert held_completion_tokens(request.max_output_tokens(), request.choices()) == 120
