"""catalog/: parsing upstream entries, the live catalog, suggestions and the sync."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from teegate.catalog import (
    AttestationStatus,
    Catalog,
    CatalogEntryError,
    CatalogModel,
    CatalogSync,
    Price,
    describe,
    describe_servable,
    list_servable,
    parse_entry,
)
from teegate.upstream import Listing
from tests.support.factories import catalog_model

MARKUP = Decimal("1.85")


def entry(model_id: str, *, confidential: bool = True, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": model_id,
        "confidential_compute": confidential,
        "context_length": 32768,
        "pricing": {"prompt": Decimal("0.25"), "completion": Decimal("1")},
        "supported_features": ["tools", "json_mode"],
    }
    base.update(extra)
    return base


def model(
    model_id: str,
    upstream: str = "up",
    *,
    confidential: bool = True,
    tags: frozenset[str] = frozenset(),
) -> CatalogModel:
    return catalog_model(model_id, upstream, confidential=confidential, tags=tags)


# parse_entry ---------------------------------------------------------------


def test_parse_entry_full() -> None:
    raw = json.loads(
        """{"id": "deepseek-ai/DeepSeek-R1-0528-TEE", "confidential_compute": true,
            "context_length": 163840, "max_output_length": 65536, "created": 1700000000,
            "owned_by": "deepseek-ai", "description": "reasoning model",
            "pricing": {"prompt": 0.40, "completion": 1.75},
            "supported_features": ["tools", "reasoning", "json_mode", "web_search"]}""",
        parse_float=Decimal,
    )
    parsed = parse_entry(raw, upstream="chutes", markup=MARKUP)
    assert parsed == CatalogModel(
        id="deepseek-ai/DeepSeek-R1-0528-TEE",
        upstream="chutes",
        confidential=True,
        context_length=163840,
        max_output_length=65536,
        tags=frozenset({"tools", "reasoning", "json_mode"}),  # unknown tags dropped
        price=Price(prompt=740_000_000, completion=3_237_500_000),
        upstream_price=Price(prompt=400_000_000, completion=1_750_000_000),
        created=1700000000,
        owned_by="deepseek-ai",
        description="reasoning model",
    )


@pytest.mark.parametrize(
    ("fields", "tags"),
    [
        ({"input_modalities": ["text"]}, frozenset()),
        ({"input_modalities": ["text", "image"]}, frozenset({"vision"})),
        ({"input_modalities": ["text", "audio", "file"]}, frozenset({"audio", "file"})),
        ({"supported_features": ["vision"]}, frozenset({"vision"})),
        ({"input_modalities": None}, frozenset()),
    ],
)
def test_input_modalities_become_capability_tags(
    fields: dict[str, Any], tags: frozenset[str]
) -> None:
    raw = entry("m", supported_features=[]) | fields
    assert parse_entry(raw, upstream="up", markup=MARKUP).tags == tags


def test_parse_entry_defaults() -> None:
    raw = {"id": "m", "max_model_len": 4096, "pricing": {"prompt": "0", "completion": 2}}
    parsed = parse_entry(raw, upstream="up", markup=Decimal("1.5"))
    assert parsed.confidential is False
    assert parsed.context_length == 4096
    assert parsed.max_output_length == 4096  # falls back to the context length
    assert parsed.tags == frozenset()
    assert parsed.price == Price(0, 3_000_000_000)
    assert parsed.upstream_price == Price(0, 2_000_000_000)
    assert (parsed.created, parsed.owned_by, parsed.description) == (0, "up", "")


@pytest.mark.parametrize("flag", [True, "true", 1, None, False])
def test_only_a_literal_true_is_confidential(flag: object) -> None:
    parsed = parse_entry(entry("m", confidential_compute=flag), upstream="up", markup=MARKUP)
    assert parsed.confidential is (flag is True)


@pytest.mark.parametrize(
    "change",
    [
        {"pricing": {"prompt": 0.25, "completion": Decimal("1")}},  # a float price
        {"pricing": {"prompt": Decimal("0.25"), "completion": True}},
        {"pricing": {"prompt": "cheap", "completion": "1"}},
        {"pricing": {"prompt": "NaN", "completion": "1"}},
        {"pricing": {"prompt": "Infinity", "completion": "1"}},
        {"pricing": {"prompt": "1"}},
        {"pricing": None},
        {"context_length": None},
        {"context_length": "long"},
        {"supported_features": [{"tools": True}]},
    ],
)
def test_parse_entry_refuses(change: dict[str, Any]) -> None:
    raw = entry("m", **change)
    with pytest.raises(CatalogEntryError, match="'m'"):
        parse_entry(raw, upstream="up", markup=MARKUP)


def test_parse_entry_without_pricing() -> None:
    raw = entry("m")
    del raw["pricing"]
    with pytest.raises(CatalogEntryError):
        parse_entry(raw, upstream="up", markup=MARKUP)


def test_parse_entry_refuses_negative_price() -> None:
    raw = entry("m", pricing={"prompt": Decimal("-0.5"), "completion": Decimal("1")})
    with pytest.raises(CatalogEntryError):
        parse_entry(raw, upstream="up", markup=MARKUP)


@pytest.mark.parametrize("raw", ["deepseek-ai/DeepSeek-V3", None, 42])
def test_parse_entry_refuses_non_object(raw: Any) -> None:
    with pytest.raises(CatalogEntryError):
        parse_entry(raw, upstream="up", markup=MARKUP)


# Catalog -------------------------------------------------------------------


def test_replace_and_servable() -> None:
    catalog = Catalog()
    assert catalog.synced_upstreams == frozenset()
    catalog.replace(
        "a", [model("x-TEE", upstream="a"), model("x", upstream="a", confidential=False)]
    )
    catalog.replace("b", [model("x-TEE", upstream="b")])
    assert catalog.synced_upstreams == {"a", "b"}
    assert [m.upstream for m in catalog.servable("x-TEE")] == ["a", "b"]
    assert catalog.servable("x") == ()
    assert catalog.servable("nope") == ()
    assert catalog.is_known("x")
    assert catalog.is_known("x-TEE")
    assert not catalog.is_known("nope")
    assert catalog.servable_ids() == ["x-TEE"]


def test_replace_is_whole() -> None:
    """A model whose confidential flag turned off stops being servable at the next sync."""
    catalog = Catalog()
    catalog.replace("a", [model("x-TEE", upstream="a"), model("y-TEE", upstream="a")])
    catalog.replace("a", [model("x-TEE", upstream="a", confidential=False)])
    assert catalog.servable("x-TEE") == ()
    assert catalog.is_known("x-TEE")
    assert not catalog.is_known("y-TEE")
    catalog.replace("a", [])
    assert not catalog.is_known("x-TEE")
    assert catalog.synced_upstreams == {"a"}


def test_servable_on_one_upstream_only() -> None:
    catalog = Catalog()
    catalog.replace("a", [model("x-TEE", upstream="a", confidential=False)])
    catalog.replace("b", [model("x-TEE", upstream="b")])
    assert [m.upstream for m in catalog.servable("x-TEE")] == ["b"]


SERVABLE_IDS = [
    "deepseek-ai/DeepSeek-V3-0324-TEE",
    "deepseek-ai/DeepSeek-V3-Base-TEE",
    "deepseek-ai/DeepSeek-V3.1-TEE",
    "deepseek-ai/DeepSeek-R1-0528-TEE",
    "Qwen/Qwen3-32B-TEE",
    "Qwen/Qwen3-32B-AWQ-TEE",
    "Qwen/Qwen3-235B-A22B-TEE",
]


@pytest.fixture
def suggestions() -> Catalog:
    catalog = Catalog()
    catalog.replace(
        "up",
        [model(m) for m in SERVABLE_IDS]
        + [
            model("deepseek-ai/DeepSeek-V3", confidential=False),
            model("Qwen/Qwen3-32B", confidential=False),
            model("unsloth/gemma-3-27b-it", confidential=False),
            model("unsloth/gemma-3-27b-it-TEE", confidential=False),
        ],
    )
    return catalog


@pytest.mark.parametrize(
    ("asked", "suggested"),
    [
        ("deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-V3-0324-TEE"),
        ("Qwen/Qwen3-32B", "Qwen/Qwen3-32B-TEE"),
        ("unsloth/gemma-3-27b-it", None),  # its -TEE twin exists but is not servable
        ("deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R1-0528-TEE"),
        ("deepseek-ai/DeepSeek-R1-0528-TEE", None),  # never suggests itself
        ("nobody/none", None),
    ],
)
def test_suggest_alternative(suggestions: Catalog, asked: str, suggested: str | None) -> None:
    assert suggestions.suggest_alternative(asked) == suggested


# describe ------------------------------------------------------------------

PASSING = AttestationStatus(passed=True, mode="simulated", verified_at=1_700_000_000)
FAILING = AttestationStatus(passed=False, mode="attested-tls", reason="quote expired")


class Verdicts:
    def __init__(self, statuses: dict[str, AttestationStatus]) -> None:
        self.statuses = statuses

    def status(self, offer: CatalogModel) -> AttestationStatus:
        return self.statuses[offer.upstream]

    def distrust(self, upstream: str, reason: str) -> None:
        raise AssertionError("describing never distrusts")

    async def reports(self, offer: CatalogModel, nonce: bytes | None) -> list[dict[str, Any]]:
        return []


def test_describe() -> None:
    parsed = parse_entry(entry("x-TEE"), upstream="up", markup=MARKUP)
    described = describe(parsed, PASSING)
    assert described == {
        "id": "x-TEE",
        "object": "model",
        "created": 0,
        "owned_by": "up",
        "confidential_compute": True,
        "capabilities": ["json_mode", "tools"],
        "context_length": 32768,
        "max_output_length": 32768,
        "description": "",
        "pricing": {"prompt": "0.4625", "completion": "1.85", "unit": "USD per 1M tokens"},
        "attestation": {"status": "verified", "mode": "simulated", "verified_at": 1_700_000_000},
    }


def test_describe_servable_picks_a_passing_upstream() -> None:
    catalog = Catalog()
    catalog.replace("a", [model("x-TEE", upstream="a")])
    catalog.replace("b", [model("x-TEE", upstream="b"), model("y-TEE", upstream="b")])
    catalog.replace("c", [model("z", upstream="c", confidential=False)])
    verdicts = Verdicts({"a": FAILING, "b": PASSING, "c": PASSING})
    described = describe_servable(catalog, verdicts, "x-TEE")
    assert described is not None
    assert described["owned_by"] == "b"
    assert describe_servable(catalog, Verdicts({"a": FAILING, "b": FAILING}), "x-TEE") is None
    assert describe_servable(catalog, verdicts, "z") is None
    assert [d["id"] for d in list_servable(catalog, verdicts)] == ["x-TEE", "y-TEE"]
    only_a = Verdicts({"a": PASSING, "b": FAILING})
    assert [d["id"] for d in list_servable(catalog, only_a)] == ["x-TEE"]


# CatalogSync ---------------------------------------------------------------


class FakeSource:
    """A CatalogSource whose answer each test sets: a list of entries, or an exception."""

    def __init__(self, name: str, answer: list[Any] | Exception) -> None:
        self.name = name
        self.answer = answer
        self.calls = 0

    async def list_models(self) -> Listing:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return Listing(self.answer, trusted=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_sync_fills_the_catalog_with_marked_up_prices(clock: Clock) -> None:
    catalog = Catalog()
    a = FakeSource("a", [entry("x-TEE"), entry("x", confidential=False)])
    b = FakeSource("b", [entry("y-TEE")])
    await CatalogSync(
        catalog, [a, b], markup=MARKUP, interval_s=10, clock=clock.monotonic
    ).sync_once()
    assert (a.calls, b.calls) == (1, 1)
    assert catalog.synced_upstreams == {"a", "b"}
    assert catalog.servable_ids() == ["x-TEE", "y-TEE"]
    (offer,) = catalog.servable("x-TEE")
    assert offer.upstream == "a"
    assert offer.price == Price(462_500_000, 1_850_000_000)


async def test_sync_skips_bad_entries_and_keeps_good_ones(clock: Clock) -> None:
    catalog = Catalog()
    bad = entry("bad-TEE", pricing={"prompt": 0.1, "completion": 0.2})  # floats
    source = FakeSource("a", [bad, entry("x-TEE")])
    await CatalogSync(
        catalog, [source], markup=MARKUP, interval_s=10, clock=clock.monotonic
    ).sync_once()
    assert catalog.servable_ids() == ["x-TEE"]
    assert not catalog.is_known("bad-TEE")


async def test_sync_failure_keeps_the_list_until_stale_then_drops_it(clock: Clock) -> None:
    catalog = Catalog()
    source = FakeSource("a", [entry("x-TEE")])
    sync = CatalogSync(catalog, [source], markup=MARKUP, interval_s=10, clock=clock.monotonic)
    await sync.sync_once()
    source.answer = ConnectionError("upstream down")

    clock.now += 10
    await sync.sync_once()
    assert catalog.servable_ids() == ["x-TEE"]  # a blip keeps the models
    clock.now += 20  # exactly 3 intervals since the last success: not yet stale
    await sync.sync_once()
    assert catalog.servable_ids() == ["x-TEE"]
    clock.now += 0.001
    await sync.sync_once()
    assert catalog.servable_ids() == []  # fail closed
    assert not catalog.is_known("x-TEE")

    source.answer = [entry("x-TEE")]
    clock.now += 1
    await sync.sync_once()
    assert catalog.servable_ids() == ["x-TEE"]  # recovers on the next success


async def test_sync_failure_of_one_upstream_leaves_the_others(clock: Clock) -> None:
    catalog = Catalog()
    a = FakeSource("a", [entry("x-TEE")])
    b = FakeSource("b", [entry("x-TEE"), entry("y-TEE")])
    sync = CatalogSync(catalog, [a, b], markup=MARKUP, interval_s=10, clock=clock.monotonic)
    await sync.sync_once()
    b.answer = TimeoutError()
    clock.now += 31
    await sync.sync_once()
    assert [m.upstream for m in catalog.servable("x-TEE")] == ["a"]
    assert catalog.servable("y-TEE") == ()


async def test_sync_failure_before_any_success_serves_nothing(clock: Clock) -> None:
    catalog = Catalog()
    source = FakeSource("a", RuntimeError("never up"))
    sync = CatalogSync(catalog, [source], markup=MARKUP, interval_s=10, clock=clock.monotonic)
    await sync.sync_once()
    clock.now += 1000
    await sync.sync_once()
    assert catalog.servable_ids() == []
    assert source.calls == 2


async def test_sync_survives_a_non_object_entry(clock: Clock) -> None:
    catalog = Catalog()
    source = FakeSource("a", ["garbage", entry("x-TEE")])
    await CatalogSync(
        catalog, [source], markup=MARKUP, interval_s=10, clock=clock.monotonic
    ).sync_once()
    assert catalog.servable_ids() == ["x-TEE"]
