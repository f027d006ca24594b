"""The route table."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from teegate.api import (
    admin,
    attestation,
    chat,
    embeddings,
    health,
    keys,
    models,
    receipts,
    unavailable,
    usage,
)
from teegate.api.openapi import openapi_json


def routes() -> list[BaseRoute]:
    table: list[BaseRoute] = [
        Route("/v1/chat/completions", chat.create_chat_completion, methods=["POST"]),
        Route(unavailable.EMBEDDINGS_PATH, embeddings.create_embeddings, methods=["POST"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.retrieve_model, methods=["GET"]),
        Route("/v1/balance", usage.get_balance, methods=["GET"]),
        Route("/v1/key", keys.get_key, methods=["GET"]),
        Route("/v1/usage", usage.list_usage, methods=["GET"]),
        Route("/v1/generation", usage.get_generation, methods=["GET"]),
        Route("/v1/attestation/report", attestation.attestation_report, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/v1/receipts/{receipt_id}", receipts.get_receipt, methods=["GET"]),
        Route("/v1/transparency/sth", receipts.tree_head, methods=["GET"]),
        Route("/v1/transparency/proof", receipts.inclusion_proof, methods=["GET"]),
        Route("/v1/transparency/consistency", receipts.consistency_proof, methods=["GET"]),
        Route("/v1/transparency/leaves", receipts.leaves, methods=["GET"]),
        Route("/v1/transparency/ear", receipts.attestation_result, methods=["GET"]),
        Route("/v1/attestation/gateway", attestation.gateway_attestation, methods=["GET"]),
    ]
    table += admin.routes()
    table += [
        Route(
            path,
            unavailable.Unbuilt(modality).not_available,
            methods=list(unavailable.UNBUILT_METHODS),
        )
        for path, modality in unavailable.UNBUILT_PATHS
    ]
    return table
