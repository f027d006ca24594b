"""GET /openapi.json: the gateway's own surface, every route and method the router
has (`tests/test_openapi.py` holds the two in step), with the errors each answers.

Request bodies are described as far as teegate checks them (the rest is OpenAI's
schema, by reference, and forwarded untouched); responses as far as clients may
rely on them, open to fields added later.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import json_response
from teegate.api.unavailable import UNBUILT_METHODS, UNBUILT_PATHS
from teegate.billing import MAX_USAGE_PAGE

OPENAI_SPEC = "https://github.com/openai/openai-openapi"

ERRORS: dict[int, str] = {
    400: "invalid_request_error: bad JSON, a missing or invalid field (param names it), "
    "model_not_confidential, an unsupported capability, or the upstream refused the "
    "request as invalid",
    401: "invalid_api_key: missing, malformed, unknown or revoked key",
    402: "insufficient_balance or budget_exceeded: the hold cannot be covered",
    403: "model_not_allowed: the model is outside the key's allow-list",
    404: "model_not_found or not_found",
    405: "method_not_allowed",
    408: "request_timeout: the body did not arrive within the configured time",
    409: "idempotency_key_in_use / idempotency_key_used (a retry is neither held nor "
    "charged again), or conflict (admin: the name is taken)",
    413: "request_too_large: the body is over the configured limit",
    414: "uri_too_long: the request target is over the configured limit",
    422: "idempotency_key_reused: the Idempotency-Key was sent with another body",
    429: "rate_limit_exceeded (Retry-After says when to retry)",
    431: "request_header_fields_too_large: the request head is over the configured limits",
    499: "client_closed_request (logged; the client has gone)",
    500: "internal_error: a gateway bug (with X-Request-Id)",
    502: "upstream_error: the upstream failed; nothing undelivered is billed",
    503: "not_available (unsupported modality) or service_unavailable (a dependency is down)",
    504: "upstream_timeout",
}
AUTHED = (401, 429, 500, 503)
"""What any route behind a key may answer: a bad key, the rate limit, a bug, and a
dependency (store, limiter) down."""
RELAY = (400, 402, 403, 404, 413, 502, 504)
"""What a request relayed to an upstream may answer on top of AUTHED."""

_OPEN: dict[str, Any] = {"type": "object", "additionalProperties": True}
_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": "string", "nullable": True}
_USD = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        **_OPEN,
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json({"$ref": "#/components/schemas/Error"})}


def _operation(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[int, ...],
    *,
    auth: bool = True,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    ok_status: str = "200",
) -> dict[str, Any]:
    statuses = sorted(set(errors) | (set(AUTHED) if auth else {500}))
    responses = {ok_status: ok, **{str(s): _error(ERRORS[s]) for s in statuses}}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if not auth:
        operation["security"] = []
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    return operation


def _query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _STRING}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


CHAT_REQUEST = _object(
    {
        "model": {"type": "string", "minLength": 1},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": _object(
                {
                    "role": {
                        "type": "string",
                        "enum": ["system", "developer", "user", "assistant", "tool", "function"],
                    }
                },
                {
                    "content": {
                        "nullable": True,
                        "oneOf": [{"type": "string"}, {"type": "array", "items": _OPEN}],
                    },
                    "name": _STRING,
                    "tool_call_id": _STRING,
                    "tool_calls": {"type": "array", "items": _OPEN},
                },
            ),
        },
    },
    {
        "stream": {"type": "boolean"},
        "stream_options": _object({}, {"include_usage": {"type": "boolean"}}),
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "minimum": 1, "maximum": 8},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": _STRING, "maxItems": 4}]},
        "tools": {"type": "array", "items": _OPEN},
        "tool_choice": {"oneOf": [_STRING, _OPEN]},
        "logprobs": {"type": "boolean"},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        "parallel_tool_calls": {"type": "boolean"},
        "store": {"type": "boolean"},
        "user": _STRING,
        "reasoning_effort": _STRING,
        "service_tier": _STRING,
        "seed": {"type": "integer"},
        "logit_bias": _OPEN,
        "metadata": _OPEN,
        "modalities": {"type": "array", "items": _STRING},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "response_format": _object(
            {"type": {"type": "string", "enum": ["text", "json_object", "json_schema"]}}
        ),
    },
)
"""What teegate checks of OpenAI's CreateChatCompletionRequest; the rest is forwarded."""
CHAT_REQUEST["description"] = f"OpenAI CreateChatCompletionRequest ({OPENAI_SPEC})"

EMBEDDINGS_REQUEST = _object(
    {
        "model": {"type": "string", "minLength": 1},
        "input": {
            "oneOf": [
                _STRING,
                {"type": "array", "items": _STRING},
                {"type": "array", "items": {"type": "integer"}},
                {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
            ]
        },
    },
    {
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
    },
)
EMBEDDINGS_REQUEST["description"] = f"OpenAI CreateEmbeddingRequest ({OPENAI_SPEC})"

CHAT_COMPLETION = _object(
    {
        "id": _STRING,
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": _STRING,
        "choices": {"type": "array", "items": _OPEN},
    },
    {"usage": _OPEN},
)
MODEL = _object(
    {"id": _STRING, "object": {"type": "string", "enum": ["model"]}},
    {"confidential_compute": {"type": "boolean"}, "attestation": _OPEN, "pricing": _OPEN},
)
LIST = _object(
    {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": _OPEN}}
)
GENERATION = _object(
    {
        "id": _STRING,
        "object": {"type": "string", "enum": ["generation"]},
        "model": _STRING,
        "total_cost": _USD,
    }
)
REPORT = _object(
    {
        "object": {"type": "string", "enum": ["attestation.report"]},
        "model": _STRING,
        "nonce": _NULLABLE_STRING,
        "upstreams": {"type": "array", "items": _OPEN},
        "how_to_verify": _STRING,
    }
)
NONCE = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "1-255 visible ASCII characters, scoped to the account: a retry with the same key "
        "is neither held nor charged again (completions are never stored, so never replayed)"
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _idempotent(operation: dict[str, Any]) -> dict[str, Any]:
    """A POST that takes an Idempotency-Key, and the answers a reused key gets."""
    return {
        **operation,
        "parameters": [*operation.get("parameters", ()), IDEMPOTENCY_KEY],
        "responses": {
            **operation["responses"],
            "409": _error("idempotency_key_in_use (still running) or idempotency_key_used"),
            "422": _error("idempotency_key_reused: the key was sent with another body"),
        },
    }


def build_openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/chat/completions": {
            "post": _idempotent(
                _operation(
                    "Create a confidential chat completion",
                    {
                        "description": "chat.completion, or (stream: true) an SSE stream of "
                        f"chat.completion.chunk events ending in [DONE] ({OPENAI_SPEC})",
                        "content": {
                            **_json(CHAT_COMPLETION),
                            "text/event-stream": {"schema": _STRING},
                        },
                    },
                    (*RELAY, 499),
                    body=CHAT_REQUEST,
                )
            )
        },
        "/v1/embeddings": {
            "post": _idempotent(
                _operation(
                    "Create confidential embeddings; 503 not_available while no attested "
                    "embedding model is offered",
                    _ok(f"CreateEmbeddingResponse ({OPENAI_SPEC})", LIST),
                    (*RELAY, 499),
                    body=EMBEDDINGS_REQUEST,
                )
            )
        },
        "/v1/models": {
            "get": _operation("List the models the gate accepts now", _ok("models", LIST), ())
        },
        "/v1/models/{model_id}": {
            "get": _operation(
                "Retrieve one model (the id may contain '/', raw or percent-encoded)",
                _ok("a model", MODEL),
                (404,),
                parameters=[_path("model_id")],
            )
        },
        "/v1/attestation/report": {
            "get": _operation(
                "The evidence behind a model's current verdict. Without a nonce, the "
                "evidence of the cached verdicts; with one, a fresh attestation bound to "
                "it (limited per key, 429 beyond)",
                _ok("attestation.report", REPORT),
                (400, 404),
                parameters=[
                    _query("model", _STRING, "the model id", required=True),
                    _query("nonce", NONCE, "32 random bytes as 64 hex characters"),
                ],
            )
        },
        "/v1/balance": {
            "get": _operation(
                "The caller's balance, holds and available credit",
                _ok(
                    "USD decimal strings",
                    _object({"balance": _USD, "held": _USD, "available": _USD}),
                ),
                (),
            )
        },
        "/v1/key": {
            "get": _operation(
                "The caller's key: its limits and policy (never its secret)",
                _ok("key", _object({"data": _object({"id": _STRING})})),
                (),
            )
        },
        "/v1/usage": {
            "get": _operation(
                "The caller's usage records, newest first",
                _ok("list of generations", LIST),
                (400,),
                parameters=[
                    _query("since", _STRING, "ISO date or date-time; records from then on"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_USAGE_PAGE},
                        "at most this many records (default 100)",
                    ),
                ],
            )
        },
        "/v1/generation": {
            "get": _operation(
                "One request's tokens and cost, by its X-Request-Id",
                _ok("generation", _object({"data": GENERATION})),
                (400, 404),
                parameters=[_query("id", _STRING, "the request's X-Request-Id", required=True)],
            )
        },
        "/healthz": {
            "get": _operation(
                "Liveness", _ok("alive", _object({"status": _STRING})), (), auth=False
            )
        },
        "/readyz": {
            "get": {
                **_operation(
                    "Readiness of each dependency",
                    _ok("ready", _object({"ready": {"type": "boolean"}, "checks": _OPEN})),
                    (),
                    auth=False,
                ),
            }
        },
        "/metrics": {
            "get": {
                **_operation(
                    "Prometheus metrics (admin or metrics token)",
                    {"description": "text exposition format", "content": {"text/plain": {}}},
                    (401, 429),
                    auth=False,
                ),
                "security": [{"adminToken": []}],
            }
        },
        "/openapi.json": {
            "get": _operation(
                "This document", _ok("OpenAPI 3.0", _object({"openapi": _STRING})), (), auth=False
            )
        },
    }
    paths["/readyz"]["get"]["responses"]["503"] = _ok(
        "not ready: which check failed",
        _object({"ready": {"type": "boolean"}, "checks": _OPEN}),
    )
    paths.update(_receipt_paths())
    paths.update(_admin_paths())
    for path, _ in UNBUILT_PATHS:
        clean = openapi_path(path)
        parameters = [_path("rest")] if "{rest}" in clean else None
        summary = "Not available: no attested upstream relays this modality"
        # A {rest} with a line break matches no route (Starlette's path parameter
        # stops at one): that request is a 404 like any unknown URL.
        errors = (404, 503) if parameters else (503,)
        paths[clean] = {
            method.lower(): _operation(
                summary, _error("not_available"), errors, parameters=parameters, ok_status="503"
            )
            for method in UNBUILT_METHODS
        }
    for path, item in paths.items():
        for method, operation in item.items():
            operation.setdefault("operationId", operation_id(method, path))
    chat_ok = paths["/v1/chat/completions"]["post"]["responses"]["200"]
    chat_ok["links"] = {
        "GetGeneration": {
            "operationId": operation_id("get", "/v1/generation"),
            "parameters": {"id": "$response.header.X-Request-Id"},
            "description": "the completion's tokens and cost, once settled",
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "teegate",
            "version": "1",
            "description": "OpenAI-compatible gateway for confidential inference. Every "
            "error answers in OpenAI's envelope; every answer carries X-Request-Id.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (admin_token_sha256); API keys are refused",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "code", "param", "status"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "code": {"type": "string"},
                                "param": {"type": "string", "nullable": True},
                                "status": {"type": "integer"},
                            },
                        }
                    },
                }
            },
        },
    }


def operation_id(method: str, path: str) -> str:
    """`get_v1_generation`: unique per operation, derived so it never drifts."""
    words = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    return f"{method.lower()}_{words}"


def openapi_path(route_path: str) -> str:
    """A Starlette route path as OpenAPI writes it: `{name:path}` becomes `{name}`."""
    return route_path.replace(":path}", "}")


_INDEX = {"type": "integer", "minimum": 0}


def _receipt_paths() -> dict[str, Any]:
    """Receipts, the transparency log and the gateway's own quote (docs/verify.md)."""
    leaf = _query("leaf", _INDEX, "a leaf index of the log", required=True)
    return {
        "/v1/receipts/{receipt_id}": {
            "get": _operation(
                "The signed receipt of one completion (its owner only)",
                _ok("receipt", _OPEN),
                (404,),
                parameters=[_path("receipt_id")],
            )
        },
        "/v1/transparency/sth": {
            "get": _operation(
                "The log's signed tree head", _ok("signed tree head", _OPEN), (503,), auth=False
            )
        },
        "/v1/transparency/proof": {
            "get": _operation(
                "Inclusion proof (RFC 9162) of a leaf",
                _ok("audit path", _OPEN),
                (400, 503),
                auth=False,
                parameters=[leaf, _query("tree_size", _INDEX, "the tree size proved against")],
            )
        },
        "/v1/transparency/consistency": {
            "get": _operation(
                "Consistency proof between two tree sizes",
                _ok("proof", _OPEN),
                (400, 503),
                auth=False,
                parameters=[
                    _query("from", _INDEX, "the older tree size", required=True),
                    _query("to", _INDEX, "the newer tree size (default: current)"),
                ],
            )
        },
        "/v1/transparency/leaves": {
            "get": _operation(
                "Log leaves start..end-1 (at most 1000)",
                _ok("leaves", _OPEN),
                (400, 503),
                auth=False,
                parameters=[
                    _query("start", _INDEX, "first leaf index", required=True),
                    _query("end", _INDEX, "one past the last leaf index", required=True),
                ],
            )
        },
        "/v1/transparency/ear": {
            "get": _operation(
                "A logged verdict as an IETF RATS EAR JWT signed by the gateway",
                _ok("EAR JWT", _OPEN),
                (400, 404, 503),
                auth=False,
                parameters=[leaf],
            )
        },
        "/v1/attestation/gateway": {
            "get": _operation(
                "The gateway's TDX quote binding its receipt key and the nonce "
                "(503 not_available outside a TDX guest)",
                _ok("quote", _OPEN),
                (400, 503),
                auth=False,
                parameters=[_query("nonce", _STRING, "64 hex digits, fresh", required=True)],
            )
        },
    }


ADMIN_OPERATIONS: tuple[tuple[str, str, str, str], ...] = (
    ("/accounts", "post", "Create an account ({name, credit_usd?}); 201", "the account"),
    ("/accounts", "get", "List accounts with their balances", "list of accounts"),
    ("/accounts/{name}", "get", "One account: balance, held, available, budgets", "account"),
    ("/accounts/{name}/credit", "post", "Add credit ({usd, memo?}, a decimal string)", "account"),
    ("/accounts/{name}/budgets", "put", "Set or drop the account's budgets", "account"),
    ("/keys", "post", "Create a key; its secret is in `key`, this once; 201", "the key"),
    ("/keys", "get", "List keys (?account=), hints only", "list of keys"),
    ("/keys/{key_id}", "get", "One key with its budgets", "key"),
    ("/keys/{key_id}", "patch", "Change a key's limits, policy or budgets", "key"),
    ("/keys/{key_id}/revoke", "post", "Revoke a key", "key"),
    ("/keys/{key_id}/rotate", "post", "Replace a key (new secret in `key`); 201", "new key"),
    ("/usage", "get", "Usage records (?account=&since=&limit=), newest first", "list"),
)


def _admin_paths() -> dict[str, Any]:
    """`/admin/v1`: the admin token only; 404 everywhere while none is configured."""
    paths: dict[str, Any] = {}
    for path, method, summary, ok in ADMIN_OPERATIONS:
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        operation = {
            **_operation(
                summary,
                _ok(ok, _OPEN),
                (400, 401, 404, 409),
                auth=False,
                parameters=[_path(name) for name in names] or None,
                ok_status="201" if summary.endswith("; 201") else "200",
            ),
            "security": [{"adminToken": []}],
        }
        paths.setdefault(f"/admin/v1{path}", {})[method] = operation
    return paths


async def openapi_json(request: Request) -> Response:
    return json_response(build_openapi())
