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
    paths.update(_receipt_paths())
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


def _query(name: str, *, required: bool) -> dict[str, Any]:
    kind = {"type": "string"} if name == "nonce" else {"type": "integer", "minimum": 0}
    return {"name": name, "in": "query", "required": required, "schema": kind}


def _receipt_paths() -> dict[str, Any]:
    """Receipts, the transparency log and the gateway's own quote (docs/verify.md)."""
    return {
        "/v1/receipts/{receipt_id}": {
            "get": {
                **_operation("The signed receipt of one completion (its owner only)", "receipt"),
                "parameters": [
                    {
                        "name": "receipt_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            }
        },
        "/v1/transparency/sth": {
            "get": _operation("The log's signed tree head", "signed tree head", auth=False)
        },
        "/v1/transparency/proof": {
            "get": {
                **_operation("Inclusion proof (RFC 9162) of a leaf", "audit path", auth=False),
                "parameters": [
                    _query("leaf", required=True),
                    _query("tree_size", required=False),
                ],
            }
        },
        "/v1/transparency/consistency": {
            "get": {
                **_operation("Consistency proof between two tree sizes", "proof", auth=False),
                "parameters": [_query("from", required=True), _query("to", required=False)],
            }
        },
        "/v1/transparency/leaves": {
            "get": {
                **_operation("Log leaves start..end-1 (at most 1000)", "leaves", auth=False),
                "parameters": [_query("start", required=True), _query("end", required=True)],
            }
        },
        "/v1/transparency/ear": {
            "get": {
                **_operation(
                    "A logged verdict as an IETF RATS EAR JWT signed by the gateway",
                    "EAR JWT",
                    auth=False,
                ),
                "parameters": [_query("leaf", required=True)],
            }
        },
        "/v1/attestation/gateway": {
            "get": {
                **_operation(
                    "The gateway's TDX quote binding its receipt key and the nonce "
                    "(503 not_available outside a TDX guest)",
                    "quote",
                    auth=False,
                ),
                "parameters": [_query("nonce", required=True)],
            }
        },
    }


async def openapi_json(request: Request) -> Response:
    return json_response(build_openapi())
