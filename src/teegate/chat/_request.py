"""A chat completion request, validated by hand: faster than a model round trip,
and every error names the field (`param`) the way OpenAI's API does.

Fields teegate does not interpret are forwarded untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from teegate.catalog import Capabilities, CatalogModel
from teegate.config import RequestDefaults
from teegate.errors import InvalidRequest, UpstreamRejected

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
RESPONSE_FORMATS = {"text": None, "json_object": "json_mode", "json_schema": "structured_outputs"}
# Content parts a text-only model cannot read: refused as OpenAI does, not dropped upstream.
CONTENT_NEEDS = {
    "image_url": ("vision", "messages"),
    "input_audio": ("audio", "messages"),
    "file": ("file", "messages"),
}
TEXT_PARTS = frozenset({"text", "refusal"})
"""Content parts any chat model reads: a part of another type (`video_url`, a type
no model here lists) is refused, never forwarded to be counted at a price the hold
did not cover."""
MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
MAX_JSON_DEPTH = 128
"""The deepest nesting a body may have. orjson parses up to 1024 levels but
serializes only up to 254, and every body is serialized again on its way upstream:
a limit well below both keeps that a 400 here rather than a 500 there. No real
request (tool schemas included) comes near it."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    body: dict[str, Any]
    needs: Capabilities
    max_tokens_defaulted: bool = False

    def max_output_tokens(self) -> int:
        return int(self.body.get("max_completion_tokens") or self.body["max_tokens"])

    def choices(self) -> int:
        return int(self.body.get("n") or 1)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body as every endpoint takes it: one JSON object."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc.msg} at position {exc.pos}).",
            code="invalid_json",
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    # Fewer brackets than the limit cannot nest past it: most bodies skip the walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _too_deep(body):
        raise InvalidRequest(
            f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.",
            code="invalid_json",
        )
    return body


def _too_deep(body: dict[str, Any]) -> bool:
    """Whether any value sits deeper than MAX_JSON_DEPTH; iterative, so a deep body
    cannot exhaust the stack that checks it."""
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children: Iterable[Any] = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def parse_chat_request(raw: bytes, defaults: RequestDefaults) -> ChatRequest:
    body = parse_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _missing_or_invalid("model", model, "a model id string")
    content_needs = _check_messages(body.get("messages"))
    _check_sampling(body)
    stream, include_usage = _check_stream(body)
    needs = (*_check_tools(body), *_check_response_format(body), *content_needs)
    defaulted = _apply_defaults(body, defaults)
    return ChatRequest(model, stream, include_usage, body, Capabilities(needs), defaulted)


def check_against_model(request: ChatRequest, model: CatalogModel) -> None:
    """Limits that depend on the model: called once the gate has admitted it.

    A default the client never asked for is capped at the model's limit rather
    than refused.
    """
    limit = model.max_output_length
    if request.max_tokens_defaulted and request.body["max_tokens"] > limit:
        request.body["max_tokens"] = limit
    for field in ("max_tokens", "max_completion_tokens"):
        value = request.body.get(field)
        if value is not None and value > limit:
            raise InvalidRequest(
                f"{field} is {value}, but '{model.id}' produces at most {limit} tokens.",
                param=field,
                code="invalid_value",
            )


def _missing_or_invalid(param: str, value: object, expected: str) -> InvalidRequest:
    if value is None:
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type"
    )


def _check_messages(messages: object) -> tuple[tuple[str, str], ...]:
    """The capabilities the messages' content parts need (none for plain text)."""
    if not isinstance(messages, list):
        raise _missing_or_invalid("messages", messages, "an array of messages")
    if not messages:
        raise InvalidRequest(
            "'messages' must contain at least one message.", param="messages", code="empty_array"
        )
    needs: tuple[tuple[str, str], ...] = ()
    for index, message in enumerate(messages):
        for need in _check_message(index, message):
            if need not in needs:
                needs = (*needs, need)
    return needs


def _check_message(index: int, message: object) -> tuple[tuple[str, str], ...]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _missing_or_invalid(where, message, "an object with 'role' and 'content'")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        if role is None:
            raise _missing_or_invalid(f"{where}.role", None, "")
        raise InvalidRequest(
            f"Invalid value for '{where}.role': expected one of {', '.join(sorted(ROLES))}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    tool_calls = _check_name_and_calls(where, message)
    content = message.get("content")
    if content is None:
        if role == "assistant" and (tool_calls or message.get("function_call")):
            return ()
        raise _missing_or_invalid(f"{where}.content", None, "")
    needs: tuple[tuple[str, str], ...] = ()
    if isinstance(content, list):
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _missing_or_invalid(
                    f"{where}.content[{part_index}]", part, "a content part with a 'type'"
                )
            need = _part_need(f"{where}.content[{part_index}].type", part["type"])
            if need is not None and need not in needs:
                needs = (*needs, need)
    elif not isinstance(content, str):
        raise _missing_or_invalid(f"{where}.content", content, "a string or an array of parts")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _missing_or_invalid(f"{where}.tool_call_id", message.get("tool_call_id"), "a string")
    return needs


def _part_need(param: str, kind: str) -> tuple[str, str] | None:
    if kind in TEXT_PARTS:
        return None
    need = CONTENT_NEEDS.get(kind)
    if need is None:
        kinds = ", ".join(sorted(TEXT_PARTS | CONTENT_NEEDS.keys()))
        raise InvalidRequest(
            f"Invalid value for '{param}': '{kind[:64]}' is not a content part type "
            f"teegate serves (one of {kinds}).",
            param=param,
            code="invalid_value",
        )
    return need


def _check_name_and_calls(where: str, message: dict[str, Any]) -> object:
    """A message's `name` and `tool_calls`, as OpenAI types them; returns the calls."""
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise _missing_or_invalid(f"{where}.name", name, "a string")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        _check_tool_calls(f"{where}.tool_calls", tool_calls)
    return tool_calls


def _check_tool_calls(where: str, tool_calls: object) -> None:
    """The calls an earlier assistant turn made, as OpenAI types them: each an object
    with a string `id` and a `function` of string `name` and `arguments`."""
    if not isinstance(tool_calls, list):
        raise _missing_or_invalid(where, tool_calls, "an array of tool calls")
    for index, call in enumerate(tool_calls):
        at = f"{where}[{index}]"
        if not isinstance(call, dict):
            raise _missing_or_invalid(at, call, "a tool call object")
        if not isinstance(call.get("id"), str):
            raise _missing_or_invalid(f"{at}.id", call.get("id"), "a string")
        kind = call.get("type", "function")
        if kind != "function":
            raise InvalidRequest(
                f"Invalid value for '{at}.type': expected 'function'.",
                param=f"{at}.type",
                code="invalid_value",
            )
        function = call.get("function")
        if not isinstance(function, dict):
            raise _missing_or_invalid(f"{at}.function", function, "an object")
        for field in ("name", "arguments"):
            if not isinstance(function.get(field), str):
                raise _missing_or_invalid(f"{at}.function.{field}", function.get(field), "a string")


def _number(body: dict[str, Any], field: str, low: float, high: float) -> None:
    value = body.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _missing_or_invalid(field, value, "a number")
    if not low <= value <= high:
        raise InvalidRequest(
            f"Invalid value for '{field}': {value} is not between {low:g} and {high:g}.",
            param=field,
            code="invalid_value",
        )


def _integer(body: dict[str, Any], field: str, low: int, high: int | None = None) -> None:
    value = body.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _missing_or_invalid(field, value, "an integer")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise InvalidRequest(
            f"Invalid value for '{field}': {value}; it must be {bound}.",
            param=field,
            code="invalid_value",
        )


FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "logprobs": (bool, "a boolean"),
    "parallel_tool_calls": (bool, "a boolean"),
    "store": (bool, "a boolean"),
    "user": (str, "a string"),
    "reasoning_effort": (str, "a string"),
    "service_tier": (str, "a string"),
    "seed": (int, "an integer"),
    "logit_bias": (dict, "an object"),
    "metadata": (dict, "an object"),
    "modalities": (list, "an array of strings"),
    "tool_choice": ((str, dict), "a string or an object"),
}
"""OpenAI's fields teegate forwards without interpreting, held to their types so a
wrong one is the client's 400 here, not an upstream's (or worse, accepted)."""


def _check_field_types(body: dict[str, Any]) -> None:
    for field, (kind, expected) in FIELD_TYPES.items():
        value = body.get(field)
        if value is None:
            continue
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise _missing_or_invalid(field, value, expected)


def _check_sampling(body: dict[str, Any]) -> None:
    _check_field_types(body)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _integer(body, "max_tokens", 1)
    _integer(body, "max_completion_tokens", 1)
    _integer(body, "n", 1, MAX_CHOICES)
    _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    _check_stop(body.get("stop"))
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise InvalidRequest(
            "Invalid value for 'top_logprobs': it is only allowed when 'logprobs' is true.",
            param="top_logprobs",
            code="invalid_value",
        )


def _check_stop(stop: object) -> None:
    """A string or at most MAX_STOP_SEQUENCES strings, as OpenAI allows; refused here
    so every upstream is held to it (some accept more) before any credit is held."""
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise _missing_or_invalid("stop", stop, "a string or an array of strings")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"Invalid 'stop': array too long. Expected an array with maximum length "
            f"{MAX_STOP_SEQUENCES}, but got an array with length {len(stop)} instead.",
            param="stop",
            code="array_above_max_length",
        )


def _check_stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _missing_or_invalid("stream", stream, "a boolean")
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.",
            param="stream_options",
            code="invalid_value",
        )
    if not isinstance(options, dict):
        raise _missing_or_invalid("stream_options", options, "an object")
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise _missing_or_invalid("stream_options.include_usage", include_usage, "a boolean")
    return True, bool(include_usage)


def _check_tools(body: dict[str, Any]) -> list[tuple[str, str]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _missing_or_invalid("tools", tools, "an array of tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _missing_or_invalid(
                f"tools[{index}].function", function, "an object with a 'name'"
            )
    return [("tools", "tools")] if tools else []


def _check_response_format(body: dict[str, Any]) -> list[tuple[str, str]]:
    response_format = body.get("response_format")
    if response_format is None:
        return []
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if not isinstance(kind, str) or kind not in RESPONSE_FORMATS:
        raise InvalidRequest(
            "Invalid value for 'response_format.type': expected one of "
            "'text', 'json_object', 'json_schema'.",
            param="response_format",
            code="invalid_value",
        )
    json_schema = response_format.get("json_schema")
    if kind == "json_schema" and not isinstance(json_schema, dict):
        raise _missing_or_invalid("response_format.json_schema", json_schema, "an object")
    tag = RESPONSE_FORMATS[kind]
    return [(tag, "response_format")] if tag else []


def _apply_defaults(body: dict[str, Any], defaults: RequestDefaults) -> bool:
    """Fill in what the client left out; True if max_tokens was one of them."""
    defaulted = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
    if defaulted:
        body["max_tokens"] = defaults.max_tokens
    if body.get("temperature") is None:
        body["temperature"] = defaults.temperature
    if body.get("top_p") is None:
        body["top_p"] = defaults.top_p
    return defaulted


ECHO_WINDOW = 12
"""An upstream's reason that shares this many characters with the prompt repeats it."""
MIN_ECHO = 4
MAX_REASON_CHARS = 300
_SAFE_PARAM = re.compile(r"[A-Za-z0-9_.\[\]-]{1,100}")
_SAFE_CODE = re.compile(r"[a-z0-9_]{1,64}")
_NOT_PROMPT_KEYS = frozenset({"role", "type", "name", "tool_call_id", "id", "detail"})


def upstream_refusal(rejected: UpstreamRejected, body: Mapping[str, Any]) -> UpstreamRejected:
    """What the client hears of an upstream's 400: its reason, param and code, unless
    the reason repeats any of the request's text (upstreams echo the offending input,
    and prompts never reach an error message)."""
    message, param, code = rejected.detail
    param = param if param and _SAFE_PARAM.fullmatch(param) else None
    code = code if code and _SAFE_CODE.fullmatch(code) else None
    reason = (message or "").strip()
    if not reason or len(reason) > MAX_REASON_CHARS or _echoes(reason, _prompt_texts(body)):
        text = rejected.message + (
            " Its reason is not shown: it repeated request content." if reason else ""
        )
    else:
        text = f"The model's upstream refused the request: {reason}"
    return UpstreamRejected(text, param=param, code=code)


def _prompt_texts(body: Mapping[str, Any]) -> list[str]:
    """Every string a client wrote in its messages, tools or input (not field names or kinds)."""
    texts: list[str] = []
    stack: list[Any] = [body.get("messages"), body.get("tools"), body.get("input")]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            stack.extend(v for k, v in value.items() if k not in _NOT_PROMPT_KEYS)
        elif isinstance(value, list):
            stack.extend(value)
    return texts


def _echoes(reason: str, texts: list[str]) -> bool:
    """Whether `reason` contains a text, or any ECHO_WINDOW characters of one."""
    joined = "\0".join(texts)
    if any(len(t) >= MIN_ECHO and t in reason for t in texts):
        return True
    last = len(reason) - ECHO_WINDOW
    return any(reason[i : i + ECHO_WINDOW] in joined for i in range(max(last + 1, 0)))
