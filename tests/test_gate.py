"""catalog/_gate.py: admit() is the only way a chat request reaches an upstream."""

from __future__ import annotations

from typing import Any

import pytest

from teegate.catalog import (
    Admitted,
    AttestationStatus,
    Capabilities,
    Catalog,
    CatalogModel,
    admit,
)
from teegate.errors import ModelNotConfidential, ModelNotFound, UnsupportedCapability
from tests.support.factories import catalog_model

ALL_TAGS = frozenset({"tools", "json_mode", "structured_outputs", "reasoning"})
NO_NEEDS = Capabilities()


def model(
    model_id: str,
    upstream: str = "up",
    *,
    confidential: bool = True,
    tags: frozenset[str] = ALL_TAGS,
) -> CatalogModel:
    return catalog_model(model_id, upstream, confidential=confidential, tags=tags)


def passing(upstream: str) -> AttestationStatus:
    return AttestationStatus(passed=True, mode="simulated", header=f"verdict={upstream}")


def failing(upstream: str) -> AttestationStatus:
    return AttestationStatus(passed=False, mode="attested-tls", reason=f"{upstream}: quote stale")


class Verdicts:
    """An AttestationView that records which upstreams the gate asked about."""

    def __init__(self, **passed: bool) -> None:
        self.passed = passed
        self.asked: list[str] = []

    def status(self, offer: CatalogModel) -> AttestationStatus:
        upstream = offer.upstream
        self.asked.append(upstream)
        return passing(upstream) if self.passed.get(upstream, False) else failing(upstream)

    def distrust(self, upstream: str, reason: str) -> None:
        raise AssertionError("the gate never distrusts")

    async def reports(self, offer: CatalogModel, nonce: bytes | None) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def catalog() -> Catalog:
    catalog = Catalog()
    catalog.replace(
        "a",
        [
            model("deepseek-ai/DeepSeek-V3-0324-TEE", "a"),
            model("deepseek-ai/DeepSeek-V3", "a", confidential=False),
            model("unsloth/gemma-3-27b-it", "a", confidential=False),
            model("acme/Plain-TEE", "a", tags=frozenset()),
        ],
    )
    catalog.replace("b", [model("deepseek-ai/DeepSeek-V3-0324-TEE", "b")])
    return catalog


def test_admits_a_confidential_model_with_a_passing_verdict(catalog: Catalog) -> None:
    verdicts = Verdicts(a=True, b=True)
    admitted = admit(catalog, verdicts, "deepseek-ai/DeepSeek-V3-0324-TEE", NO_NEEDS)
    assert isinstance(admitted, Admitted)
    assert admitted.model.upstream == "a"
    assert admitted.attestation == passing("a")
    assert verdicts.asked == ["a"]  # the first passing offer wins; no more lookups


def test_unknown_model_is_not_found(catalog: Catalog) -> None:
    verdicts = Verdicts(a=True, b=True)
    with pytest.raises(ModelNotFound) as info:
        admit(catalog, verdicts, "acme/NoSuchModel", NO_NEEDS)
    assert info.value.param == "model"
    assert info.value.error_code == "model_not_found"
    assert "acme/NoSuchModel" in info.value.message
    assert verdicts.asked == []


@pytest.mark.parametrize(
    ("model_id", "hint"),
    [
        ("deepseek-ai/DeepSeek-V3", " Use 'deepseek-ai/DeepSeek-V3-0324-TEE' instead."),
        ("unsloth/gemma-3-27b-it", None),
    ],
)
def test_non_confidential_model_is_refused(
    catalog: Catalog, model_id: str, hint: str | None
) -> None:
    verdicts = Verdicts(a=True, b=True)
    with pytest.raises(ModelNotConfidential) as info:
        admit(catalog, verdicts, model_id, NO_NEEDS)
    error = info.value
    assert (error.status, error.error_code, error.param) == (400, "model_not_confidential", "model")
    assert error.message.startswith(f"Model '{model_id}' is not Confidential Compute.")
    if hint is None:
        assert "instead" not in error.message
    else:
        assert error.message.endswith(hint)
    assert verdicts.asked == []  # refused before any attestation lookup


@pytest.mark.parametrize(
    ("needs", "param", "tag"),
    [
        (Capabilities((("tools", "tools"),)), "tools", "tools"),
        (Capabilities((("json_mode", "response_format"),)), "response_format", "json_mode"),
        (
            Capabilities((("structured_outputs", "response_format"),)),
            "response_format",
            "structured_outputs",
        ),
        (Capabilities((("vision", "messages"),)), "messages", "vision"),
    ],
)
def test_missing_capability_is_refused_with_its_param(
    catalog: Catalog, needs: Capabilities, param: str, tag: str
) -> None:
    verdicts = Verdicts(a=True)
    with pytest.raises(UnsupportedCapability) as info:
        admit(catalog, verdicts, "acme/Plain-TEE", needs)
    error = info.value
    assert (error.status, error.error_code, error.param) == (400, "unsupported_capability", param)
    assert f"'{tag}'" in error.message
    assert "Model 'acme/Plain-TEE' does not support" in error.message
    assert verdicts.asked == []


def test_image_parts_are_sent_only_to_an_offer_that_reads_images() -> None:
    catalog = Catalog()
    catalog.replace("a", [model("m-TEE", "a", tags=frozenset())])
    catalog.replace("b", [model("m-TEE", "b", tags=frozenset({"vision"}))])
    needs = Capabilities((("vision", "messages"),))
    assert admit(catalog, Verdicts(a=True, b=True), "m-TEE", needs).model.upstream == "b"
    catalog.replace("b", [])
    with pytest.raises(UnsupportedCapability, match="does not support image_url content parts"):
        admit(catalog, Verdicts(a=True), "m-TEE", needs)


def test_capabilities_present_are_admitted(catalog: Catalog) -> None:
    needs = Capabilities((("tools", "tools"), ("structured_outputs", "response_format")))
    admitted = admit(catalog, Verdicts(a=True), "deepseek-ai/DeepSeek-V3-0324-TEE", needs)
    assert admitted.model.upstream == "a"


def test_failing_attestation_on_one_upstream_admits_to_the_passing_one(catalog: Catalog) -> None:
    verdicts = Verdicts(a=False, b=True)
    admitted = admit(catalog, verdicts, "deepseek-ai/DeepSeek-V3-0324-TEE", NO_NEEDS)
    assert admitted.model.upstream == "b"
    assert admitted.attestation.passed
    assert verdicts.asked == ["a", "b"]


def test_all_attestations_failing_is_not_confidential(catalog: Catalog) -> None:
    verdicts = Verdicts(a=False, b=False)
    with pytest.raises(ModelNotConfidential) as info:
        admit(catalog, verdicts, "deepseek-ai/DeepSeek-V3-0324-TEE", NO_NEEDS)
    message = info.value.message
    assert "is not Confidential Compute right now" in message
    assert "a: quote stale" in message
    assert "b: quote stale" in message
    assert info.value.param == "model"


def test_a_model_that_stopped_being_confidential_is_refused(catalog: Catalog) -> None:
    catalog.replace("a", [model("deepseek-ai/DeepSeek-V3-0324-TEE", "a", confidential=False)])
    catalog.replace("b", [])
    with pytest.raises(ModelNotConfidential):
        admit(catalog, Verdicts(a=True), "deepseek-ai/DeepSeek-V3-0324-TEE", NO_NEEDS)


def test_only_capable_offers_are_admitted_even_if_another_attests() -> None:
    catalog = Catalog()
    catalog.replace("a", [model("m-TEE", "a", tags=frozenset({"tools"}))])
    catalog.replace("b", [model("m-TEE", "b", tags=frozenset())])
    needs = Capabilities((("tools", "tools"),))
    with pytest.raises(ModelNotConfidential):
        admit(catalog, Verdicts(a=False, b=True), "m-TEE", needs)


def test_a_capable_second_offer_is_admitted() -> None:
    catalog = Catalog()
    catalog.replace("a", [model("m-TEE", "a", tags=frozenset())])
    catalog.replace("b", [model("m-TEE", "b", tags=frozenset({"tools"}))])
    needs = Capabilities((("tools", "tools"),))
    admitted = admit(catalog, Verdicts(a=True, b=True), "m-TEE", needs)
    assert admitted.model.upstream == "b"
