"""A model as clients see it in `/v1/models` and `teegate models`: OpenAI's Model
object plus what confidential inference adds (attestation, capabilities, prices)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from teegate.billing import nano_to_usd
from teegate.catalog._catalog import Catalog
from teegate.catalog._gate import AttestationStatus, AttestationView, offer_status
from teegate.catalog._model import CatalogModel

if TYPE_CHECKING:
    from teegate.catalog._floor import AttestationFloor

PRICE_UNIT = "USD per 1M tokens"


def describe_servable(
    catalog: Catalog,
    attestation: AttestationView,
    model_id: str,
    floor: AttestationFloor | None = None,
) -> dict[str, Any] | None:
    """The first offer whose attestation passes now (and meets the key's floor, if
    given); None when the gate would refuse."""
    for offer in catalog.servable(model_id):
        status = offer_status(offer, attestation)
        if status.passed and (floor is None or floor.unmet(offer.upstream, status) is None):
            return describe(offer, status)
    return None


def list_servable(
    catalog: Catalog,
    attestation: AttestationView,
    *,
    allows: Callable[[str], bool] | None = None,
    floor: AttestationFloor | None = None,
) -> list[dict[str, Any]]:
    """What the gate would admit now, for a key whose allow-list is `allows`."""
    ids = [m for m in catalog.servable_ids() if allows is None or allows(m)]
    described = (describe_servable(catalog, attestation, m, floor) for m in ids)
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
