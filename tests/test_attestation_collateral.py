"""Collateral: parsed once, cached per platform until nextUpdate, failures mapped."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import dcap_qvl
import pytest

from teegate.attestation import Collateral, PccsCollateralProvider, StaticCollateralProvider
from teegate.devstack.tdx_pki import TdxTestPki, collateral_window
from teegate.errors import AttestationFailed

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def pki() -> TdxTestPki:
    return TdxTestPki()


class CountingPccs:
    """A PCCS stand-in behind dcap-qvl's `get_collateral` signature."""

    def __init__(self, pki: TdxTestPki, *, after_s: int = 3600) -> None:
        self.pki = pki
        self.after_s = after_s
        self.calls = 0
        self.down = False

    async def __call__(self, url: str, quote: bytes) -> Any:
        self.calls += 1
        if self.down:
            raise ConnectionError("PCS down")
        issued, next_update = collateral_window(NOW, after_s=self.after_s)
        text = self.pki.collateral_json(issued_at=issued, next_update=next_update)
        return dcap_qvl.QuoteCollateralV3.from_json(text)


async def test_pccs_collateral_is_cached_until_next_update(pki: TdxTestPki) -> None:
    pccs = CountingPccs(pki)
    provider = PccsCollateralProvider("https://pccs.example", fetch=pccs)
    quote = pki.quote(b"\0" * 64)
    first = await provider.collateral_for(quote, NOW)
    second = await provider.collateral_for(pki.quote(b"\1" * 64), NOW + 3599)
    assert first is second and pccs.calls == 1
    assert first.source == "https://pccs.example"
    assert first.next_update_s == NOW + 3600
    await provider.collateral_for(quote, NOW + 3600)
    assert pccs.calls == 2


async def test_refresh_fetches_every_cached_platform_again(pki: TdxTestPki) -> None:
    pccs = CountingPccs(pki)
    provider = PccsCollateralProvider("https://pccs.example", fetch=pccs)
    other = TdxTestPki()
    first = await provider.collateral_for(pki.quote(b"\0" * 64), NOW)
    await provider.collateral_for(other.quote(b"\0" * 64), NOW)
    pccs.after_s = 7200  # the PCS now publishes another collateral
    await provider.refresh()
    assert pccs.calls == 4
    fresh = await provider.collateral_for(pki.quote(b"\1" * 64), NOW)
    assert fresh is not first
    assert fresh.next_update_s == NOW + 7200
    assert pccs.calls == 4  # served from the refreshed cache


async def test_a_failed_refresh_keeps_the_cached_collateral(pki: TdxTestPki) -> None:
    pccs = CountingPccs(pki)
    provider = PccsCollateralProvider("https://pccs.example", fetch=pccs)
    quote = pki.quote(b"\0" * 64)
    cached = await provider.collateral_for(quote, NOW)
    pccs.down = True
    await provider.refresh()
    assert pccs.calls == 2
    assert await provider.collateral_for(quote, NOW) is cached


async def test_pccs_cache_is_per_platform(pki: TdxTestPki) -> None:
    pccs = CountingPccs(pki)
    provider = PccsCollateralProvider("https://pccs.example", fetch=pccs)
    await provider.collateral_for(pki.quote(b"\0" * 64), NOW)
    await provider.collateral_for(TdxTestPki().quote(b"\0" * 64), NOW)
    assert pccs.calls == 2


async def test_concurrent_requests_fetch_once(pki: TdxTestPki) -> None:
    pccs = CountingPccs(pki)
    provider = PccsCollateralProvider("https://pccs.example", fetch=pccs)
    quote = pki.quote(b"\0" * 64)
    await asyncio.gather(*(provider.collateral_for(quote, NOW) for _ in range(5)))
    assert pccs.calls == 1


async def test_unreachable_pccs_is_transient_with_the_real_client(pki: TdxTestPki) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = PccsCollateralProvider(f"http://127.0.0.1:{port}", timeout_s=5)
    with pytest.raises(AttestationFailed) as info:
        await provider.collateral_for(pki.quote(b"\0" * 64), NOW)
    assert info.value.check == "collateral_unavailable"


async def test_slow_pccs_times_out(pki: TdxTestPki) -> None:
    async def slow(url: str, quote: bytes) -> Any:
        await asyncio.sleep(5)

    provider = PccsCollateralProvider("https://pccs.example", fetch=slow, timeout_s=0.05)
    with pytest.raises(AttestationFailed) as info:
        await provider.collateral_for(pki.quote(b"\0" * 64), NOW)
    assert info.value.check == "collateral_unavailable"


async def test_pccs_returning_garbage_is_refused(pki: TdxTestPki) -> None:
    async def garbage(url: str, quote: bytes) -> Any:
        return "not collateral"

    provider = PccsCollateralProvider("https://pccs.example", fetch=garbage)
    with pytest.raises(AttestationFailed) as info:
        await provider.collateral_for(pki.quote(b"\0" * 64), NOW)
    assert info.value.check == "collateral_unavailable"


async def test_quote_without_platform_id_is_refused() -> None:
    provider = PccsCollateralProvider("https://pccs.example", fetch=CountingPccs(TdxTestPki()))
    with pytest.raises(AttestationFailed) as info:
        await provider.collateral_for(b"\x04\x00garbage", NOW)
    assert info.value.check == "quote_format"


async def test_static_provider_returns_its_collateral(pki: TdxTestPki) -> None:
    issued, next_update = collateral_window(NOW)
    collateral = Collateral.from_json(
        pki.collateral_json(issued_at=issued, next_update=next_update), source="static"
    )
    provider = StaticCollateralProvider(collateral)
    assert await provider.collateral_for(b"", NOW) is collateral
    assert "static" in repr(provider)


def test_collateral_report_carries_the_json(pki: TdxTestPki) -> None:
    issued, next_update = collateral_window(NOW)
    collateral = Collateral.from_json(
        pki.collateral_json(issued_at=issued, next_update=next_update), source="static"
    )
    report = collateral.to_report()
    assert report["source"] == "static"
    assert set(report["collateral"]) >= {"tcb_info", "qe_identity", "pck_crl"}
