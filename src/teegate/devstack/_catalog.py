"""The upstream's model catalog, served as is apart from faults that flip TEE flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


class Catalog:
    """The catalog file, loaded once, indexed by model id."""

    def __init__(self, document: dict[str, Any], *, embeddings: bool = True) -> None:
        models = document.get("data")
        if document.get("object") != "list" or not isinstance(models, list):
            raise ValueError("catalog must be an object 'list' with a 'data' array")
        if not embeddings:
            models = [m for m in models if "embeddings" not in m.get("output_modalities", ())]
            document = {**document, "data": models}
        self._document = document
        self._by_id: dict[str, dict[str, Any]] = {model["id"]: model for model in models}

    @classmethod
    def load(cls, path: Path, *, embeddings: bool = True) -> Catalog:
        """`embeddings=False` leaves the embedding models out, as if never offered."""
        return cls(orjson.loads(path.read_bytes()), embeddings=embeddings)

    def find(self, model_id: str) -> dict[str, Any] | None:
        return self._by_id.get(model_id)

    def supports(self, model_id: str, feature: str) -> bool:
        model = self._by_id.get(model_id, {})
        return feature in model.get("supported_features", ())

    def listing(self, flagged_off: frozenset[str]) -> dict[str, Any]:
        """The catalog document, with flagged-off models reporting no confidential compute.

        Copies only the entries it changes, so the loaded catalog stays pristine
        and removing the fault restores the original flag.
        """
        data = [
            {**model, "confidential_compute": False} if model["id"] in flagged_off else model
            for model in self._document["data"]
        ]
        return {**self._document, "data": data}
