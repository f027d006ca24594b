"""Parse and validate a chat completion request into the few fields the devstack uses.

Malformed input is answered with a 400 envelope naming the offending `param`,
never a 500, because the gateway's tests send deliberately broken requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from teegate.devstack._errors import invalid_request

OutputMode = Literal["text", "json_object", "json_schema"]

MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 128
MAX_TOP_LOGPROBS = 20
"""OpenAI's bounds for `stop`, `n` and `top_logprobs`."""


@dataclass(frozen=True)
class FunctionTool:
    """The function the simulated model will call, with its JSON Schema parameters."""

    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    """What the simulated model honours of a request.

    `tools` are the functions each answer calls, in order (empty: it answers
    in text); `logprobs` is how many alternatives to list per token, or None
    when no log probabilities were asked for.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    tools: tuple[FunctionTool, ...]
    output: OutputMode
    output_schema: dict[str, Any] | None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: int | None = None
    seed: int | None = None


def parse_chat_request(raw: bytes) -> ChatRequest:
    body = json_object(raw)
    output, schema = _response_format(body.get("response_format"))
    parallel = body.get("parallel_tool_calls")
    return ChatRequest(
        model=_model(body.get("model")),
        messages=_messages(body.get("messages")),
        max_tokens=_max_tokens(body),
        stream=_bool(body.get("stream"), "stream"),
        include_usage=_include_usage(body.get("stream_options")),
        tools=_called_tools(
            body.get("tools"),
            body.get("tool_choice"),
            parallel=parallel is None or _bool(parallel, "parallel_tool_calls"),
        ),
        output=output,
        output_schema=schema,
        stop=_stop(body.get("stop")),
        n=_integer(body.get("n"), "n", 1, MAX_CHOICES) or 1,
        logprobs=_logprobs(body.get("logprobs"), body.get("top_logprobs")),
        seed=_integer(body.get("seed"), "seed", -(2**63), 2**63 - 1),
    )


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; anything else is a 400."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request(
            "The body is not valid JSON.", param=None, code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise invalid_request("The body must be a JSON object.", param=None, code="invalid_type")
    return body


def _model(value: Any) -> str:
    if value is None:
        raise invalid_request(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    if not isinstance(value, str) or not value:
        raise invalid_request(
            "'model' must be a non-empty string.", param="model", code="invalid_type"
        )
    return value


def _messages(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise invalid_request(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(value, list) or not value:
        raise invalid_request(
            "'messages' must be a non-empty array.", param="messages", code="invalid_type"
        )
    for index, message in enumerate(value):
        _check_message(message, f"messages[{index}]")
    return value


def _check_message(message: Any, param: str) -> None:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise invalid_request(
            "Each message must be an object with a 'role'.", param=param, code="invalid_type"
        )
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        raise invalid_request(
            "'content' must be a string or an array of parts.",
            param=f"{param}.content",
            code="invalid_type",
        )


def _max_tokens(body: dict[str, Any]) -> int | None:
    """`max_completion_tokens` wins over the deprecated `max_tokens`, as in OpenAI's API."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid_request(f"'{name}' must be an integer >= 1.", param=name)
        return value
    return None


def _integer(value: Any, param: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"'{param}' must be an integer.", param=param, code="invalid_type")
    if not low <= value <= high:
        raise invalid_request(f"'{param}' must be between {low} and {high}.", param=param)
    return value


def _stop(value: Any) -> tuple[str, ...]:
    """Stop sequences; empty strings are dropped, since they would match before any text."""
    if value is None:
        return ()
    sequences = [value] if isinstance(value, str) else value
    if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
        raise invalid_request(
            "'stop' must be a string or an array of strings.", param="stop", code="invalid_type"
        )
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise invalid_request(
            f"Invalid 'stop': array too long. Expected an array with maximum length "
            f"{MAX_STOP_SEQUENCES}, but got an array with length {len(sequences)} instead.",
            param="stop",
            code="array_above_max_length",
        )
    return tuple(s for s in sequences if s)


def _logprobs(logprobs: Any, top_logprobs: Any) -> int | None:
    """How many alternatives per token, or None; `top_logprobs` needs `logprobs: true`."""
    alternatives = _integer(top_logprobs, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if not _bool(logprobs, "logprobs"):
        if alternatives is not None:
            raise invalid_request(
                "'top_logprobs' is only allowed when 'logprobs' is true.", param="top_logprobs"
            )
        return None
    return alternatives or 0


def _bool(value: Any, param: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid_request(f"'{param}' must be a boolean.", param=param, code="invalid_type")
    return value


def _include_usage(options: Any) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid_request(
            "'stream_options' must be an object.", param="stream_options", code="invalid_type"
        )
    return _bool(options.get("include_usage"), "stream_options.include_usage")


def _called_tools(tools: Any, choice: Any, *, parallel: bool) -> tuple[FunctionTool, ...]:
    """The functions an answer calls: the one `tool_choice` names; none if 'none';
    otherwise every offered function, in parallel, or only the first when
    `parallel_tool_calls` is false."""
    if tools is None or tools == []:
        return ()
    if not isinstance(tools, list):
        raise invalid_request("'tools' must be an array.", param="tools", code="invalid_type")
    functions = tuple(_function_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools))
    if choice == "none":
        return ()
    if choice is None or choice in ("auto", "required"):
        return functions if parallel else functions[:1]
    return (_named_tool(functions, choice),)


def _function_tool(tool: Any, param: str) -> FunctionTool:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise invalid_request(
            "Each tool needs a 'function' with a 'name'.", param=param, code="invalid_type"
        )
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise invalid_request(
            "'parameters' must be a JSON Schema object.", param=f"{param}.function.parameters"
        )
    return FunctionTool(name=function["name"], parameters=parameters)


def _named_tool(functions: tuple[FunctionTool, ...], choice: Any) -> FunctionTool:
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    for tool in functions:
        if tool.name == name:
            return tool
    raise invalid_request(
        "'tool_choice' must be 'none', 'auto', 'required' or name an offered function.",
        param="tool_choice",
    )


def _response_format(value: Any) -> tuple[OutputMode, dict[str, Any] | None]:
    kind = value.get("type") if isinstance(value, dict) else value
    if value is None or kind == "text":
        return "text", None
    if kind == "json_object":
        return "json_object", None
    if kind == "json_schema" and isinstance(value, dict):
        return "json_schema", _json_schema(value.get("json_schema"))
    raise invalid_request(
        "'response_format.type' must be text, json_object or json_schema.", param="response_format"
    )


def _json_schema(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise invalid_request("'json_schema' needs a 'name'.", param="response_format.json_schema")
    schema = spec.get("schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise invalid_request(
            "'json_schema.schema' must be an object.", param="response_format.json_schema.schema"
        )
    return schema
