"""GET /openapi.json: the gateway's own surface, with OpenAI's schemas by reference."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._responses import json_response
from teegate.api.unavailable import UNBUILT_PATHS

OPENAI_SPEC = "https://github.com/openai/openai-openapi"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(summary: str, ok: str, *, auth: bool = True) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": ok}, "default": _error("OpenAI error envelope")},
    }
    if not auth:
        operation["security"] = []
    return operation


def build_openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/chat/completions": {
            "post": _operation(
                "Create a confidential chat completion (OpenAI CreateChatCompletionRequest)",
                f"chat.completion, or an SSE stream of chat.completion.chunk ({OPENAI_SPEC})",
            )
        },
        "/v1/embeddings": {
            "post": {
                **_operation(
                    "Create confidential embeddings (OpenAI CreateEmbeddingRequest); "
                    "503 not_available while no attested embedding model is offered",
                    f"CreateEmbeddingResponse ({OPENAI_SPEC})",
                ),
            }
        },
        "/v1/models": {"get": _operation("List models the gate accepts now", "list of models")},
        "/v1/models/{model_id}": {
            "get": {
                **_operation("Retrieve one model (the id may contain '/')", "a model"),
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            }
        },
        "/healthz": {"get": _operation("Liveness", "alive", auth=False)},
        "/readyz": {"get": _operation("Readiness of each dependency", "ready", auth=False)},
        "/metrics": {
            "get": {
                **_operation("Prometheus metrics (admin or metrics token)", "metrics"),
                "security": [{"adminToken": []}],
            }
        },
        "/v1/balance": {
            "get": _operation("The caller's balance, holds and available credit", "USD strings")
        },
        "/v1/key": {
            "get": _operation("The caller's key: its limits and policy (never its secret)", "key")
        },
        "/v1/usage": {
            "get": _operation("The caller's usage records, newest first (since, limit)", "list")
        },
        "/v1/generation": {
            "get": _operation("One request's tokens and cost, by its X-Request-Id (id)", "record")
        },
    }
    paths.update(_admin_paths())
    for path, _ in UNBUILT_PATHS:
        clean = path.replace("{rest:path}", "{rest}")
        paths[clean] = {
            "post": {
                "summary": "Not available: no attested upstream for this modality",
                "responses": {
                    "503": _error("not_available"),
                    "default": _error("OpenAI error envelope"),
                },
                **(
                    {
                        "parameters": [
                            {
                                "name": "rest",
                                "in": "path",
                                "required": True,
                                "schema": {"type": "string"},
                            }
                        ]
                    }
                    if "{rest}" in clean
                    else {}
                ),
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "teegate",
            "version": "1",
            "description": "OpenAI-compatible gateway for confidential inference",
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
                            "required": ["message", "type", "code"],
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
        operation = {**_operation(summary, ok), "security": [{"adminToken": []}]}
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        if names:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in names
            ]
        paths.setdefault(f"/admin/v1{path}", {})[method] = operation
    return paths


async def openapi_json(request: Request) -> Response:
    return json_response(build_openapi())
