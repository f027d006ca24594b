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
                    "Create a confidential chat completion (OpenAI CreateChatCompletionRequest)",
                    f"chat.completion, or an SSE stream of chat.completion.chunk ({OPENAI_SPEC})",
                )
            )
        },
        "/v1/embeddings": {
            "post": _idempotent(
                _operation(
                    "Create confidential embeddings (OpenAI CreateEmbeddingRequest); "
                    "503 not_available while no attested embedding model is offered",
                    f"CreateEmbeddingResponse ({OPENAI_SPEC})",
                )
            )
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
        "/metrics": {"get": _operation("Prometheus metrics", "metrics", auth=False)},
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
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
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


async def openapi_json(request: Request) -> Response:
    return json_response(build_openapi())
