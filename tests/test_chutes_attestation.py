"""chutes mode, unit level: attestations added while running, per-chute keys, the
status the gate reads per offer, and the settings and catalog fields it needs."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from teegate.assurance import (
    CHUTES_HEADER_SUFFIX,
    MAX_CHUTES_PER_UPSTREAM,
    UpstreamAssurance,
    build_attestation,
    chute_key,
)
from teegate.attestation import (
    AttestationMode,
    AttestationPolicy,
    Attestor,
    Collateral,
    EvidenceBatch,
    EvidenceVerifier,
    UpstreamAttestation,
    Verdict,
)
from teegate.attestation.http import ChutesAdapter
from teegate.catalog import CatalogEntryError, CatalogModel, parse_entry
from teegate.config import CHUTES_API_URL, Settings, UpstreamSettings, load_settings
from teegate.errors import ConfigError
from teegate.live import ChutesCatalog
from teegate.upstream import Listing
from tests.support.factories import catalog_model

UNREACHABLE = "https://127.0.0.1:1"


class CountingAdapter:
    """Provider-asserted evidence (no verification needed), counting fetches and closes."""

    def __init__(self) -> None:
        self.fetches = 0
        self.closed = 0

    @property
    def mode(self) -> AttestationMode:
        return "provider-asserted"

    async def fetch(self, nonce: bytes) -> EvidenceBatch:
        self.fetches += 1
        return EvidenceBatch(provider_asserted=True)

    async def aclose(self) -> None:
        self.closed += 1


class NoCollateral:
    async def collateral_for(self, quote: bytes, now_s: int) -> Collateral:
        raise AssertionError("provider-asserted evidence needs no collateral")

    async def refresh(self) -> None:
        return None


def bare_attestor() -> Attestor:
    return Attestor(EvidenceVerifier(NoCollateral()), [])


def asserted(key: str, adapter: CountingAdapter) -> UpstreamAttestation:
    policy = AttestationPolicy(require_gpu=False)
    return UpstreamAttestation(key, adapter, policy)


async def wait_for(condition: Callable[[], object], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


# ---- Attestor.add / remove -------------------------------------------------------------------


async def test_added_before_start_waits_for_start_then_refreshes_in_the_background() -> None:
    attestor = bare_attestor()
    adapter = CountingAdapter()
    attestor.add(asserted("late", adapter))
    assert attestor.upstreams == ("late",)
    await asyncio.sleep(0.05)
    assert adapter.fetches == 0  # not running: no loop yet
    attestor.start()
    await wait_for(lambda: attestor.cache.verdicts("late"))
    assert attestor.cache.require("late").passed
    await attestor.aclose()
    assert adapter.closed == 1


async def test_added_while_running_starts_its_loop_at_once() -> None:
    attestor = bare_attestor()
    attestor.start()
    adapter = CountingAdapter()
    attestor.add(asserted("late", adapter))
    await wait_for(lambda: attestor.cache.verdicts("late"))
    assert adapter.fetches == 1
    with pytest.raises(ConfigError):
        attestor.add(asserted("late", CountingAdapter()))
    await attestor.aclose()


async def test_remove_stops_the_loop_closes_the_adapter_and_forgets_verdicts() -> None:
    attestor = bare_attestor()
    attestor.start()
    adapter = CountingAdapter()
    attestor.add(asserted("gone", adapter))
    await wait_for(lambda: attestor.cache.verdicts("gone"))
    await attestor.remove("gone")
    assert attestor.upstreams == ()
    assert attestor.cache.verdicts("gone") == ()
    assert adapter.closed == 1
    assert "running=True" not in repr(attestor)  # no task left behind
    await attestor.remove("never-added")  # a no-op
    attestor.add(asserted("gone", CountingAdapter()))  # may come back
    await wait_for(lambda: attestor.cache.verdicts("gone"))
    await attestor.aclose()


def test_add_checks_the_gpu_service_like_the_constructor() -> None:
    attestor = bare_attestor()
    adapter = ChutesAdapter("c1", api_base=UNREACHABLE)
    with pytest.raises(ConfigError, match="require_gpu"):
        attestor.add(UpstreamAttestation("up#c1", adapter, AttestationPolicy(require_gpu=True)))
    assert attestor.upstreams == ()


# ---- per-chute keys ----------------------------------------------------------------------------


def chutes_settings(tmp_path: Path, **upstream: Any) -> Settings:
    values = {"name": "ch", "base_url": UNREACHABLE, "attestation": "chutes"}
    return load_settings(
        None,
        environment="development",
        key_hash_secret="secret",
        data_dir=tmp_path,
        upstreams=(UpstreamSettings(**(values | upstream)),),
    )


def passing_verdict(key: str, instance: str) -> Verdict:
    now = int(time.time())
    return Verdict(
        id=f"att_{instance}",
        upstream=key,
        instance_id=instance,
        mode="simulated",
        passed=True,
        failed_check=None,
        reason="all checks passed",
        verified_at_s=now,
        expires_at_s=now + 600,
        tcb_status="UpToDate",
    )


def offer(chute_id: str | None, upstream: str = "ch") -> CatalogModel:
    return dataclasses.replace(catalog_model("m-TEE", upstream), chute_id=chute_id)


async def test_each_listed_chute_gets_its_own_attestation(tmp_path: Path) -> None:
    settings = chutes_settings(tmp_path, evidence_url="https://evidence.example")
    runtime = build_attestation(settings)
    assert runtime is not None
    try:
        attestor, chutes = runtime.attestor, runtime.chutes
        assert attestor.upstreams == () and chutes.upstreams == {"ch"}
        await chutes.follow("ch", ["c1", "c2", "c1"])
        assert sorted(attestor.upstreams) == ["ch#c1", "ch#c2"]
        assert chute_key("ch", "c1") == "ch#c1"
        adapter = attestor._upstreams["ch#c2"].adapter
        assert isinstance(adapter, ChutesAdapter)
        assert (adapter.chute_id, adapter.api_base) == ("c2", "https://evidence.example")

        await chutes.follow("ch", ["c2", "c3"])  # c1 left the catalog, c3 joined it
        assert sorted(attestor.upstreams) == ["ch#c2", "ch#c3"]
        assert chutes.chute_ids("ch") == {"c2", "c3"}

        many = [f"c{i}" for i in range(MAX_CHUTES_PER_UPSTREAM + 5)]
        await chutes.follow("ch", many)
        assert len(attestor.upstreams) == MAX_CHUTES_PER_UPSTREAM
    finally:
        await runtime.aclose()


async def test_the_gate_reads_the_verdict_of_the_offers_chute(tmp_path: Path) -> None:
    settings = chutes_settings(tmp_path)
    runtime = build_attestation(settings)
    assert runtime is not None
    try:
        await runtime.chutes.follow("ch", ["c1", "c2"])
        assurance = UpstreamAssurance(settings.upstreams, runtime.attestor)
        cache = runtime.attestor.cache

        assert not assurance.upstream_status("ch").passed
        missing = assurance.status(offer("c1"))
        assert not missing.passed and "ch#c1" in missing.reason
        assert "without a chute_id" in assurance.status(offer(None)).reason

        cache.replace("ch#c1", [passing_verdict("ch#c1", "i-1")])
        status = assurance.status(offer("c1"))
        assert status.passed and status.mode == "simulated"
        assert status.header.startswith("mode=simulated; verdict=att_i-1;")
        assert status.header.endswith(CHUTES_HEADER_SUFFIX)
        assert status.channel == "unbound" and status.tls_pin is None
        assert not assurance.status(offer("c2")).passed  # another chute: its own verdict
        assert not assurance.status(offer("c9")).passed  # a chute never listed
        assert assurance.upstream_status("ch").passed  # one attested chute is enough

        verdicts = await assurance.reports(offer("c1"), None)
        assert [v["id"] for v in verdicts] == ["att_i-1"]
        assert await assurance.reports(offer("c9"), None) == []
        assurance.distrust("ch", "no pin to distrust")  # chutes traffic is not pinned
        assert assurance.status(offer("c1")).passed
    finally:
        await runtime.aclose()


async def test_every_catalog_listing_updates_the_attested_chutes(tmp_path: Path) -> None:
    settings = chutes_settings(tmp_path)
    runtime = build_attestation(settings)
    assert runtime is not None

    class FakeClient:
        name = "ch"
        entries: list[dict[str, Any]] = []

        async def list_models(self) -> Listing:
            return Listing(self.entries, True)

    def entry(model_id: str, chute_id: Any, confidential: bool = True) -> dict[str, Any]:
        return {
            "id": model_id,
            "chute_id": chute_id,
            "confidential_compute": confidential,
            "context_length": 8192,
            "pricing": {"prompt": Decimal("0.1"), "completion": Decimal("0.2")},
        }

    client = FakeClient()
    source = ChutesCatalog(client, runtime.chutes)  # type: ignore[arg-type]
    try:
        client.entries = [entry("a-TEE", "c1"), entry("plain", "c0", confidential=False)]
        await source.list_models()
        assert runtime.attestor.upstreams == ("ch#c1",)
        client.entries = [
            entry("a-TEE", "c1"),
            entry("b-TEE", "c2"),
            entry("bad-TEE", "../../admin"),  # skipped by the catalog: never attested
        ]
        listing = await source.list_models()
        assert len(listing.entries) == 3
        assert sorted(runtime.attestor.upstreams) == ["ch#c1", "ch#c2"]
    finally:
        await runtime.aclose()


# ---- settings and catalog ------------------------------------------------------------------


def test_chutes_needs_nothing_else(tmp_path: Path) -> None:
    (upstream,) = chutes_settings(tmp_path).upstreams
    assert upstream.evidence_url == CHUTES_API_URL == "https://api.chutes.ai"
    assert upstream.evidence_ca_file is None


def test_evidence_ca_file_is_for_chutes_in_development_only(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed here")
    assert chutes_settings(tmp_path, evidence_ca_file=ca).upstreams[0].evidence_ca_file == ca
    with pytest.raises(ValueError, match="evidence_ca_file"):
        UpstreamSettings(name="x", base_url=UNREACHABLE, evidence_ca_file=ca)
    with pytest.raises(ValueError, match="evidence_ca_file"):
        UpstreamSettings(
            name="x",
            base_url=UNREACHABLE,
            attestation="chutes",
            evidence_ca_file=tmp_path / "missing.pem",
        )
    with pytest.raises(ConfigError, match="evidence_ca_file: refused in production"):
        load_settings(
            None,
            environment="production",
            key_hash_secret="secret",
            upstreams=(
                UpstreamSettings(
                    name="ch", base_url=UNREACHABLE, attestation="chutes", evidence_ca_file=ca
                ),
            ),
        )


def test_catalog_entries_keep_their_chute_id() -> None:
    base = {"id": "m-TEE", "context_length": 8, "pricing": {"prompt": "1", "completion": "2"}}
    assert (
        parse_entry(base | {"chute_id": "7da7eecd-aae5"}, upstream="u", markup=Decimal(1)).chute_id
        == "7da7eecd-aae5"
    )
    assert parse_entry(base, upstream="u", markup=Decimal(1)).chute_id is None
    for bad in ("../x", "a/b", "", 7, "x" * 129):
        with pytest.raises(CatalogEntryError, match="chute_id"):
            parse_entry(base | {"chute_id": bad}, upstream="u", markup=Decimal(1))
