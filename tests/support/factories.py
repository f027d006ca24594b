"""Small builders shared by unit tests."""

from __future__ import annotations

from teegate.catalog import CatalogModel, Price


def catalog_model(
    model_id: str,
    upstream: str = "up",
    *,
    confidential: bool = True,
    tags: frozenset[str] = frozenset(),
    modality: str = "chat",
) -> CatalogModel:
    return CatalogModel(
        id=model_id,
        upstream=upstream,
        confidential=confidential,
        context_length=8192,
        max_output_length=4096,
        tags=tags,
        price=Price(1, 2),
        upstream_price=Price(1, 2),
        created=0,
        owned_by=upstream,
        description="",
        modality=modality,
    )
