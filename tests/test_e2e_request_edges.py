"""Requests at the edges of what the gateway parses (issue 18, findings 7 and 8):
each answers a clear 4xx in the OpenAI envelope, never a 500, and an upstream's
own refusal reaches the client as the 400 it is, with its reason."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from teegate.app import create_app
from tests.support.gateway import (
    Devstack,
    Gateway,
    attested_settings,
    prepare_database,
)
from tests.support.openai_schemas import validate
from tests.support.servers import ServerThread

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _nested(depth: int) -> str:
    """JSON text nested `depth` arrays deep (built as text: encoders stop short of it)."""
    return "[" * depth + '"leaf"' + "]" * depth


def _post(gateway: Gateway, body: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=orjson.dumps(body) if not isinstance(body, bytes) else body,
        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
        timeout=30,
    )


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    validate(body, "ErrorResponse")
    error: dict[str, Any] = body["error"]
    assert error["status"] == status
    return error


@pytest.mark.parametrize("depth", [255, 300, 1000])
@pytest.mark.parametrize("where", ["extra", "tool", "message"])
def test_deeply_nested_json_is_a_400_not_a_500(
    gateway: Gateway, devstack: Devstack, depth: int, where: str
) -> None:
    deep = _nested(depth)
    hello = orjson.dumps(HELLO).decode()
    body = {
        "extra": f'{{"model": "{R1}", "messages": {hello}, "metadata_x": {deep}}}',
        "tool": f'{{"model": "{R1}", "messages": {hello}, "tools": [{{"type": "function", '
        f'"function": {{"name": "f", "parameters": {deep}}}}}]}}',
        "message": f'{{"model": "{R1}", "messages": [{{"role": "user", "content": "hi", '
        f'"extra": {deep}}}]}}',
    }[where].encode()
    before = devstack.chat_requests()
    error = _error(_post(gateway, body), 400)
    assert error["code"] == "invalid_json"
    assert "nested" in error["message"]
    assert devstack.chat_requests() == before


def test_nesting_within_the_limit_is_forwarded(gateway: Gateway) -> None:
    hello = orjson.dumps(HELLO).decode()
    body = f'{{"model": "{R1}", "messages": {hello}, "max_tokens": 5, "x": {_nested(60)}}}'
    assert _post(gateway, body.encode()).status_code == 200


@pytest.mark.parametrize("limit", ["²", "①", "٣", "9" * 4301, "-1", "+5", " 5", "0"])
def test_odd_usage_limits_are_a_400(gateway: Gateway, limit: str) -> None:
    response = httpx.get(
        f"{gateway.url}/v1/usage",
        params={"limit": limit},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    error = _error(response, 400)
    assert error["param"] == "limit"


def test_a_nonce_with_a_trailing_newline_is_refused(gateway: Gateway) -> None:
    response = httpx.get(
        f"{gateway.url}/v1/attestation/report",
        params={"model": R1, "nonce": "ab" * 32 + "\n"},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert _error(response, 400)["param"] == "nonce"


WRONG_TYPES = [
    pytest.param({"role": "user", "content": "hi", "name": 5}, "messages[0].name", id="name-int"),
    pytest.param(
        {"role": "assistant", "content": None, "tool_calls": "x"},
        "messages[0].tool_calls",
        id="tool-calls-string",
    ),
    pytest.param(
        {"role": "assistant", "content": None, "tool_calls": [1]},
        "messages[0].tool_calls[0]",
        id="tool-calls-int",
    ),
    pytest.param(
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
        "messages[0].tool_calls[0].function",
        id="tool-call-no-function",
    ),
    pytest.param(
        {
            "role": "assistant",
            "content": "x",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
            ],
        },
        "messages[0].tool_calls[0].function.arguments",
        id="tool-call-arguments-object",
    ),
]


@pytest.mark.parametrize(("message", "param"), WRONG_TYPES)
def test_wrong_types_in_messages_are_refused(
    gateway: Gateway, devstack: Devstack, message: dict[str, Any], param: str
) -> None:
    before = devstack.chat_requests()
    error = _error(_post(gateway, {"model": R1, "messages": [message]}), 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert devstack.chat_requests() == before


def test_a_well_formed_tool_call_history_is_accepted(gateway: Gateway) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "name": "bot",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    response = _post(gateway, {"model": R1, "messages": messages, "tools": [WEATHER]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_400_comes_back_as_a_400_with_its_reason(
    gateway: Gateway, stream: bool
) -> None:
    body = {
        "model": R1,
        "messages": HELLO,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "no_such_function"}},
        "stream": stream,
    }
    balance_before = _available(gateway)
    error = _error(_post(gateway, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "tool_choice"
    assert "tool_choice" in error["message"]
    assert _available(gateway) == balance_before  # nothing delivered, nothing charged


def test_an_upstream_refusal_that_echoes_the_prompt_is_not_repeated(gateway: Gateway) -> None:
    secret = "the secret plan is to paint the fence purple"
    body = {
        "model": R1,
        "messages": [{"role": "user", "content": secret}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": secret}}],
    }
    response = _post(gateway, body)
    error = _error(response, 400)
    assert error["param"] == "tools[0].function.parameters"
    assert "fence" not in response.text


def _available(gateway: Gateway) -> str:
    response = httpx.get(
        f"{gateway.url}/v1/balance", headers={"Authorization": f"Bearer {gateway.key}"}
    )
    return str(response.json()["balance"])


@pytest.fixture
def crashing_gateway(
    devstack: Devstack,
    attestation_services: Devstack,
    enclave_files: Path,
    tmp_path: Path,
) -> Iterator[str]:
    """The real app with one more route that fails with a bug (a plain exception)."""

    async def crash(request: Request) -> Response:
        raise RuntimeError("a bug")

    settings = attested_settings(tmp_path, devstack, attestation_services, enclave_files)
    prepare_database(settings, "crash")
    app = create_app(settings)
    app.router.routes.append(Route("/crash", crash, methods=["GET"]))
    server = ServerThread(app).start()
    try:
        yield server.url
    finally:
        server.stop()


def test_a_500_carries_the_envelope_and_request_id_and_keeps_the_connection(
    crashing_gateway: str,
) -> None:
    url = httpx.URL(crashing_gateway)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=10)
    try:
        for _ in range(2):  # the same connection answers again after a 500
            connection.request("GET", "/crash")
            response = connection.getresponse()
            body = orjson.loads(response.read())
            assert response.status == 500
            assert (response.getheader("x-request-id") or "").startswith("req_")
            assert (response.getheader("connection") or "").lower() != "close"
            validate(body, "ErrorResponse")
            assert body["error"]["code"] == "internal_error"
            assert "a bug" not in str(body)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
