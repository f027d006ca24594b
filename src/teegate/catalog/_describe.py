"""A model as clients see it in `/v1/models` and `teegate models`: OpenAI's Model
object plus what confidential inference adds (attestation, capabilities, prices)."""

from __future__ import annotations

from typing import Any

from teegate.billing import nano_to_usd
from teegate.catalog._catalog import Catalog
from teegate.catalog._gate import AttestationStatus, AttestationView, offer_status
from teegate.catalog._model import CatalogModel

PRICE_UNIT = "USD per 1M tokens"


def describe_servable(
    catalog: Catalog, attestation: AttestationView, model_id: str
) -> dict[str, Any] | None:
    """The first offer whose attestation passes now; None when the gate would refuse."""
    for offer in catalog.servable(model_id):
        status = offer_status(offer, attestation)
        if status.passed:
            return describe(offer, status)
    return None


def list_servable(catalog: Catalog, attestation: AttestationView) -> list[dict[str, Any]]:
    described = (describe_servable(catalog, attestation, m) for m in catalog.servable_ids())
    return [d for d in described if d is not None]


def describe(model: CatalogModel, status: AttestationStatus) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "confidential_compute": True,
        "modality": model.modality,
        "capabilities": sorted(model.tags),
        "context_length": model.context_length,
        "max_output_length": model.max_output_length,
        "description": model.description,
        "pricing": {
            "prompt": nano_to_usd(model.price.prompt),
            "completion": nano_to_usd(model.price.completion),
            "unit": PRICE_UNIT,
        },
        "attestation": {
            "status": "verified" if status.passed else "failed",
            "mode": status.mode,
            "verified_at": status.verified_at,
        },
    }
