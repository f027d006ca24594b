"""The switch per modality: what a catalog entry serves, whether a modality's endpoints
are open (`catalog.serves`), and a gate that keeps each model to its own endpoint."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from teegate.catalog import (
    MODALITIES,
    AttestationStatus,
    Capabilities,
    Catalog,
    CatalogModel,
    admit,
    parse_entry,
    serves,
)
from teegate.errors import InvalidRequest, ModelNotConfidential
from tests.support.factories import catalog_model

EMBEDDINGS = Capabilities(modality="embeddings")


class Verdicts:
    """Upstreams named here pass; the rest fail. Records what the switch asked."""

    def __init__(self, *passing: str) -> None:
        self.passing = set(passing)
        self.asked: list[str] = []

    def status(self, offer: CatalogModel) -> AttestationStatus:
        self.asked.append(offer.id)
        if offer.upstream in self.passing:
            return AttestationStatus(passed=True, mode="simulated")
        return AttestationStatus(passed=False, mode="attested-tls", reason="quote stale")

    def distrust(self, upstream: str, reason: str) -> None:
        raise AssertionError("never called here")

    async def reports(self, offer: CatalogModel, nonce: bytes | None) -> list[dict[str, Any]]:
        return []


def entry(**fields: Any) -> dict[str, Any]:
    return {
        "id": "m",
        "confidential_compute": True,
        "context_length": 8192,
        "pricing": {"prompt": Decimal("0.02"), "completion": Decimal(0)},
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "modality"),
    [
        ({}, "chat"),
        ({"output_modalities": ["text"]}, "chat"),
        ({"output_modalities": ["embeddings"]}, "embeddings"),
        ({"type": "embedding"}, "embeddings"),
        ({"output_modalities": ["text", "image"]}, "images"),
        ({"output_modalities": ["audio"]}, "audio"),
        ({"output_modalities": ["video"]}, "video"),
        ({"type": "moderation"}, "moderations"),
        ({"output_modalities": ["holograms"]}, "chat"),
    ],
)
def test_an_entry_names_its_modality(fields: dict[str, Any], modality: str) -> None:
    parsed = parse_entry(entry(**fields), upstream="up", markup=Decimal("1.85"))
    assert parsed.modality == modality
    assert modality in MODALITIES


def embedder(upstream: str = "a", *, confidential: bool = True) -> CatalogModel:
    return catalog_model("e-TEE", upstream, confidential=confidential, modality="embeddings")


def test_the_switch_follows_the_catalog_and_the_verdicts() -> None:
    catalog = Catalog()
    catalog.replace("a", [catalog_model("chat-TEE", "a")])
    assert not serves(catalog, Verdicts("a"), "embeddings")  # no embedding model at all
    catalog.replace("b", [embedder("b")])
    assert not serves(catalog, Verdicts("a"), "embeddings")  # offered, not attested
    assert serves(catalog, Verdicts("b"), "embeddings")  # offered and attested: open
    catalog.replace("b", [embedder("b", confidential=False)])
    assert not serves(catalog, Verdicts("b"), "embeddings")  # lost confidential_compute
    catalog.replace("b", [])
    assert not serves(catalog, Verdicts("b"), "embeddings")  # gone
    assert serves(catalog, Verdicts("a"), "chat")
    assert not any(serves(catalog, Verdicts("a", "b"), m) for m in MODALITIES[2:])


def test_the_switch_asks_only_until_one_offer_passes() -> None:
    catalog = Catalog()
    catalog.replace("a", [embedder("a")])
    catalog.replace("b", [embedder("b")])
    catalog.replace("c", [embedder("c")])
    verdicts = Verdicts("b")
    assert serves(catalog, verdicts, "embeddings")
    assert len(verdicts.asked) == 2


def test_each_model_is_admitted_only_on_its_own_endpoint() -> None:
    catalog = Catalog()
    catalog.replace("a", [embedder("a"), catalog_model("chat-TEE", "a")])
    assert admit(catalog, Verdicts("a"), "e-TEE", EMBEDDINGS).model.modality == "embeddings"
    with pytest.raises(InvalidRequest) as chat_on_embeddings:
        admit(catalog, Verdicts("a"), "chat-TEE", EMBEDDINGS)
    assert chat_on_embeddings.value.error_code == "model_not_supported"
    assert chat_on_embeddings.value.param == "model"
    assert "is a chat model, not an embedding model" in chat_on_embeddings.value.message
    with pytest.raises(InvalidRequest, match="is an embedding model, not a chat model"):
        admit(catalog, Verdicts("a"), "e-TEE", Capabilities())


def test_a_refused_twin_is_pointed_at_a_confidential_model_of_its_own_modality() -> None:
    catalog = Catalog()
    catalog.replace(
        "a",
        [
            catalog_model("org/Embed-8B", "a", confidential=False, modality="embeddings"),
            catalog_model("org/Embed-8B-Chat-TEE", "a"),  # a chat model by the same name
            catalog_model("org/Embed-8B-v2-TEE", "a", modality="embeddings"),
        ],
    )
    with pytest.raises(ModelNotConfidential, match="Use 'org/Embed-8B-v2-TEE' instead"):
        admit(catalog, Verdicts("a"), "org/Embed-8B", EMBEDDINGS)
