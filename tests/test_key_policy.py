"""apikeys.KeyPolicy and catalog.AttestationFloor: what one key may use, and what it
demands of an upstream's verdict on top of the gateway's own policy."""

from __future__ import annotations

import time
from typing import Any

import pytest

from teegate import auth
from teegate.apikeys import KeyPolicy, load_policy, model_patterns
from teegate.catalog import (
    AttestationFloor,
    AttestationStatus,
    Capabilities,
    Catalog,
    CatalogModel,
    admit,
    list_servable,
)
from teegate.config import AttestationSettings, UpstreamSettings, load_settings
from teegate.errors import ModelNotAllowed, ModelNotConfidential, PolicyError
from tests.support.factories import catalog_model

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"
GEMMA = "google/gemma-3-27b-it-TEE"
MRTD = "ab" * 48


@pytest.mark.parametrize(
    ("patterns", "allowed", "refused"),
    [
        ((R1,), [R1], [V3, R1 + "x", "deepseek-ai/"]),
        (("deepseek-ai/",), [R1, V3], [GEMMA, "deepseek-ai"]),
        (("deepseek-ai/DeepSeek-V*",), [V3], [R1, GEMMA]),
        ((R1, "google/*"), [R1, GEMMA], [V3]),
    ],
)
def test_allow_list_matches_exact_ids_and_prefixes(
    patterns: tuple[str, ...], allowed: list[str], refused: list[str]
) -> None:
    policy = KeyPolicy(models=model_patterns(patterns))
    assert [m for m in allowed + refused if policy.allows(m)] == allowed
    for model in refused:
        with pytest.raises(ModelNotAllowed, match="allow-list"):
            policy.check_model(model)


@pytest.mark.parametrize("patterns", [(), (" ",), ("deep*seek/",)])
def test_malformed_allow_lists_are_refused(patterns: tuple[str, ...]) -> None:
    with pytest.raises(PolicyError):
        model_patterns(patterns)


def test_a_policy_round_trips_through_its_stored_form() -> None:
    policy = KeyPolicy(
        models=(R1, "google/"),
        attestation=AttestationFloor(
            tcb=frozenset({"UpToDate"}),
            require_gpu=True,
            upstreams=frozenset({"a"}),
            measurements={"mrtd": frozenset({MRTD})},
            max_age_s=300,
        ),
    )
    stored = policy.dumps()
    assert stored is not None
    assert load_policy(stored) == policy
    assert KeyPolicy().dumps() is None
    assert load_policy(None) is None
    assert load_policy('{"models": null, "attestation": null}') is None


@pytest.mark.parametrize(
    "stored",
    [
        "not json",
        "[]",
        '{"tpm": 0}',
        '{"models": []}',
        '{"attestation": {"max_age_s": 0}}',
        '{"attestation": {"tcb": "UpToDate"}}',
    ],
)
def test_a_malformed_stored_policy_is_refused(stored: str) -> None:
    with pytest.raises(PolicyError):
        load_policy(stored)


def status(**overrides: Any) -> AttestationStatus:
    values: dict[str, Any] = {
        "passed": True,
        "mode": "simulated",
        "header": "mode=simulated; verdict=att_1; tcb=OutOfDate",
        "verified_at": int(time.time()),
        "tcb_status": "OutOfDate",
        "gpu": True,
        "measurements": {"mrtd": MRTD},
    }
    values.update(overrides)
    return AttestationStatus(**values)


@pytest.mark.parametrize(
    ("floor", "unmet"),
    [
        (AttestationFloor(tcb=frozenset({"UpToDate"})), "TCB status OutOfDate"),
        (AttestationFloor(upstreams=frozenset({"b"})), "upstream 'a'"),
        (AttestationFloor(measurements={"mrtd": frozenset({"cd" * 48})}), "measurements ['mrtd']"),
        (AttestationFloor(max_age_s=5), "maximum age of 5 s"),
    ],
)
def test_each_clause_names_itself_when_unmet(floor: AttestationFloor, unmet: str) -> None:
    old = status(verified_at=int(time.time()) - 60)
    reason = floor.unmet("a", old)
    assert reason is not None
    assert unmet in reason


def test_gpu_and_tcb_clauses_on_a_verdict_without_them() -> None:
    floor = AttestationFloor(require_gpu=True)
    assert floor.unmet("a", status()) is None
    assert "GPU evidence" in (floor.unmet("a", status(gpu=False)) or "")
    asserted = AttestationStatus(passed=True, mode="provider-asserted")
    assert "unverified" in (
        AttestationFloor(tcb=frozenset({"UpToDate"})).unmet("a", asserted) or ""
    )
    assert "maximum age" in (AttestationFloor(max_age_s=60).unmet("a", asserted) or "")


def test_a_floor_met_by_every_clause() -> None:
    floor = AttestationFloor(
        tcb=frozenset({"OutOfDate", "UpToDate"}),
        require_gpu=True,
        upstreams=frozenset({"a"}),
        measurements={"mrtd": frozenset({MRTD})},
        max_age_s=60,
    )
    assert floor.unmet("a", status()) is None
    assert floor.header == (
        "; key_policy=tcb:OutOfDate/UpToDate,gpu,upstreams:a,measurements:mrtd,max_age_s:60"
    )


def test_a_floor_looser_than_the_gateway_names_each_clause() -> None:
    floor = AttestationFloor(
        tcb=frozenset({"UpToDate", "OutOfDate"}),
        upstreams=frozenset({"a", "ghost"}),
        measurements={"mrtd": frozenset({MRTD})},
    )
    problems = floor.looser_than(
        tcb={"UpToDate"}, upstreams={"a"}, measurements={"mrtd": frozenset({"cd" * 48})}
    )
    assert problems == [
        "TCB statuses ['OutOfDate'] are not accepted by the gateway",
        "upstreams ['ghost'] unknown",
        "measurements.mrtd has values the gateway does not allow",
    ]
    assert (
        floor.looser_than(
            tcb={"UpToDate", "OutOfDate"}, upstreams={"a", "ghost"}, measurements=None
        )
        == []
    )


def test_check_policy_refuses_a_key_looser_than_the_gateway() -> None:
    settings = load_settings(
        None,
        environment="development",
        key_hash_secret="s" * 32,
        upstreams=(UpstreamSettings(name="a", base_url="http://127.0.0.1:1"),),
        attestation=AttestationSettings(allowed_tcb_statuses=("UpToDate", "OutOfDate")),
    )
    tight = KeyPolicy(attestation=AttestationFloor(tcb=frozenset({"UpToDate"}), require_gpu=True))
    auth.check_policy(tight, settings)
    auth.check_policy(KeyPolicy(models=(R1,)), settings)
    loose = KeyPolicy(attestation=AttestationFloor(tcb=frozenset({"SWHardeningNeeded"})))
    with pytest.raises(PolicyError, match="SWHardeningNeeded"):
        auth.check_policy(loose, settings)
    with pytest.raises(PolicyError, match="ghost"):
        auth.check_policy(
            KeyPolicy(attestation=AttestationFloor(upstreams=frozenset({"ghost"}))), settings
        )


class Statuses:
    """An AttestationView: every offer passes, with its upstream's TCB status."""

    def __init__(self, **tcb: str) -> None:
        self.tcb = tcb

    def status(self, offer: CatalogModel) -> AttestationStatus:
        return status(tcb_status=self.tcb[offer.upstream], header=f"verdict={offer.upstream}")

    def distrust(self, upstream: str, reason: str) -> None:
        raise AssertionError("the gate never distrusts")

    async def reports(self, offer: CatalogModel, nonce: bytes | None) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def catalog() -> Catalog:
    catalog = Catalog()
    catalog.replace("old", [catalog_model(R1, "old"), catalog_model(GEMMA, "old")])
    catalog.replace("new", [catalog_model(R1, "new")])
    return catalog


def test_the_gate_skips_offers_below_the_floor_and_echoes_it(catalog: Catalog) -> None:
    view = Statuses(old="OutOfDate", new="UpToDate")
    floor = AttestationFloor(tcb=frozenset({"UpToDate"}))
    admitted = admit(catalog, view, R1, Capabilities(), floor)
    assert admitted.model.upstream == "new"
    assert admitted.attestation.header == "verdict=new; key_policy=tcb:UpToDate"
    assert admit(catalog, view, R1, Capabilities()).attestation.header in {
        "verdict=old",
        "verdict=new",
    }


def test_the_gate_refuses_when_no_offer_meets_the_floor(catalog: Catalog) -> None:
    view = Statuses(old="OutOfDate", new="UpToDate")
    with pytest.raises(ModelNotConfidential) as info:
        admit(catalog, view, GEMMA, Capabilities(), AttestationFloor(tcb=frozenset({"UpToDate"})))
    assert "key's attestation policy" in info.value.message
    assert "TCB status OutOfDate" in info.value.message
    assert admit(catalog, view, GEMMA, Capabilities()).model.id == GEMMA


def test_models_list_only_what_the_key_may_use(catalog: Catalog) -> None:
    view = Statuses(old="OutOfDate", new="UpToDate")
    every = {m["id"] for m in list_servable(catalog, view)}
    assert every == {R1, GEMMA}
    allowed = KeyPolicy(models=("google/",))
    assert [m["id"] for m in list_servable(catalog, view, allows=allowed.allows)] == [GEMMA]
    floor = AttestationFloor(tcb=frozenset({"UpToDate"}))
    assert [m["id"] for m in list_servable(catalog, view, floor=floor)] == [R1]
