"""The live catalog: what each upstream offers now, and what the gate may serve.

Each upstream's list is replaced whole on every sync, so a model whose
`confidential_compute` flag turns off stops being servable at the next sync.
Reads are dict lookups: the request path never waits on a sync.
"""

from __future__ import annotations

from collections.abc import Iterable

from teegate.catalog._model import CatalogModel


class Catalog:
    def __init__(self) -> None:
        self._by_upstream: dict[str, dict[str, CatalogModel]] = {}
        self._servable: dict[str, tuple[CatalogModel, ...]] = {}
        self._known: dict[str, CatalogModel] = {}
        self._by_modality: dict[str, tuple[CatalogModel, ...]] = {}

    def replace(self, upstream: str, models: Iterable[CatalogModel]) -> None:
        self._by_upstream[upstream] = {m.id: m for m in models}
        self._rebuild()

    def _rebuild(self) -> None:
        servable: dict[str, list[CatalogModel]] = {}
        known: dict[str, CatalogModel] = {}
        for models in self._by_upstream.values():
            for model in models.values():
                known.setdefault(model.id, model)
                if model.confidential:
                    servable.setdefault(model.id, []).append(model)
        self._servable = {k: tuple(v) for k, v in servable.items()}
        self._known = known
        by_modality: dict[str, list[CatalogModel]] = {}
        for offers in self._servable.values():
            for offer in offers:
                by_modality.setdefault(offer.modality, []).append(offer)
        self._by_modality = {k: tuple(v) for k, v in by_modality.items()}

    @property
    def synced_upstreams(self) -> frozenset[str]:
        return frozenset(self._by_upstream)

    def servable(self, model_id: str) -> tuple[CatalogModel, ...]:
        """Every confidential offer of a model, one per upstream; empty if none."""
        return self._servable.get(model_id, ())

    def offers_of(self, modality: str) -> tuple[CatalogModel, ...]:
        """Every confidential offer of a modality's models; empty if none."""
        return self._by_modality.get(modality, ())

    def is_known(self, model_id: str) -> bool:
        return model_id in self._known

    def servable_ids(self) -> list[str]:
        return sorted(self._servable)

    def suggest_alternative(self, model_id: str) -> str | None:
        """A confidential model to use instead of a non-confidential one.

        `X` suggests `X-TEE` first, then the closest `X-...-TEE` variant
        (`deepseek-ai/DeepSeek-V3` -> `deepseek-ai/DeepSeek-V3-0324-TEE`), of
        the same modality (an embedding model is never offered a chat model).
        """
        known = self._known.get(model_id)
        modality = known.modality if known is not None else "chat"
        same = [m for m, offers in self._servable.items() if offers[0].modality == modality]
        base = model_id.removesuffix("-TEE")
        exact = f"{base}-TEE"
        if exact != model_id and exact in same:
            return exact
        candidates = [m for m in same if m != model_id and m.startswith(f"{base}-")]
        return min(candidates, key=lambda m: (len(m), m)) if candidates else None
