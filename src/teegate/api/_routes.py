"""The route table."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from teegate.api import chat, health, models, unavailable
from teegate.api.openapi import openapi_json

ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def routes() -> list[BaseRoute]:
    table: list[BaseRoute] = [
        Route("/v1/chat/completions", chat.create_chat_completion, methods=["POST"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.retrieve_model, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    table += [
        Route(p, unavailable.not_available, methods=ANY_METHOD)
        for p in unavailable.UNAVAILABLE_PATHS
    ]
    return table
