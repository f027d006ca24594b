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


@dataclass(frozen=True)
class FunctionTool:
    """The function the simulated model will call, with its JSON Schema parameters."""

    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    tool: FunctionTool | None
    output: OutputMode
    output_schema: dict[str, Any] | None


def parse_chat_request(raw: bytes) -> ChatRequest:
    body = json_object(raw)
    output, schema = _response_format(body.get("response_format"))
    return ChatRequest(
        model=_model(body.get("model")),
        messages=_messages(body.get("messages")),
        max_tokens=_max_tokens(body),
        stream=_bool(body.get("stream"), "stream"),
        include_usage=_include_usage(body.get("stream_options")),
        tool=_chosen_tool(body.get("tools"), body.get("tool_choice")),
        output=output,
        output_schema=schema,
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


def _chosen_tool(tools: Any, choice: Any) -> FunctionTool | None:
    """The tool to call: the one `tool_choice` names, else the first; none if 'none'."""
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise invalid_request("'tools' must be an array.", param="tools", code="invalid_type")
    functions = [_function_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    if choice == "none":
        return None
    if choice is None or choice in ("auto", "required"):
        return functions[0]
    return _named_tool(functions, choice)


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


def _named_tool(functions: list[FunctionTool], choice: Any) -> FunctionTool:
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
