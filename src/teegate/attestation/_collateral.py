"""DCAP collateral (TCB info, QE identity, CRLs): where it comes from and how long it holds.

Collateral is the same for every quote of a platform family (FMSPC) and changes
when Intel reissues it: a new TCB status (a platform going OutOfDate or Revoked), a
PCK on a CRL, a new QE identity. Its nextUpdate (up to 30 days away) says when the
issuer promises new data at the latest, not that nothing changes before, so the
cached collateral is fetched again on a schedule (`refresh`, every
`collateral_refresh_s`, hours), and the attestor re-attests with what changed.
A collateral that cannot be fetched is a transient failure (`collateral_unavailable`:
the cached one stands until its nextUpdate); one that is expired or malformed is a
rejection (`collateral`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import dcap_qvl
import structlog
from cryptography import x509

from teegate.attestation._check import rejects, summarize
from teegate.errors import AttestationFailed

__all__ = [
    "Collateral",
    "CollateralProvider",
    "PccsCollateralProvider",
    "StaticCollateralProvider",
]

CollateralFetch = Callable[[str, bytes], Awaitable[Any]]
_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Collateral:
    """One collateral set, parsed once, with the window in which it may be used."""

    json_text: str = field(repr=False)
    source: str
    issued_at_s: int
    next_update_s: int
    dcap: Any = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, json_text: str, *, source: str) -> Collateral:
        """Parse QuoteCollateralV3 JSON; any error in it is a rejection."""
        try:
            parsed = dcap_qvl.QuoteCollateralV3.from_json(json_text)
            issued, next_update = _window(parsed)
        except AttestationFailed:
            raise
        except BaseException as exc:  # a pyo3 panic derives from BaseException
            if not rejects(exc):
                raise
            reason = f"malformed collateral: {summarize(exc)}"
            raise AttestationFailed("collateral", reason) from exc
        return cls(json_text, source, issued, next_update, parsed)

    def to_report(self) -> dict[str, Any]:
        """The collateral as clients need it to re-verify: source, window, the JSON itself."""
        return {
            "source": self.source,
            "issued_at": self.issued_at_s,
            "next_update": self.next_update_s,
            "collateral": json.loads(self.json_text),
        }


def _window(parsed: Any) -> tuple[int, int]:
    """(latest issue date, earliest next update) over TCB info, QE identity and CRLs.

    The collateral holds only while every part of it does.
    """
    tcb_info = json.loads(parsed.tcb_info)
    qe_identity = json.loads(parsed.qe_identity)
    crls = [x509.load_der_x509_crl(bytes(d)) for d in (parsed.root_ca_crl, parsed.pck_crl)]
    issued = [_epoch(tcb_info["issueDate"]), _epoch(qe_identity["issueDate"])]
    issued += [int(c.last_update_utc.timestamp()) for c in crls]
    nexts = [_epoch(tcb_info["nextUpdate"]), _epoch(qe_identity["nextUpdate"])]
    nexts += [int(c.next_update_utc.timestamp()) for c in crls if c.next_update_utc]
    return max(issued), min(nexts)


def _epoch(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


class CollateralProvider(Protocol):
    """Gives the collateral to verify `quote` with at `now_s`."""

    async def collateral_for(self, quote: bytes, now_s: int) -> Collateral: ...

    async def refresh(self) -> None:
        """Fetch every cached collateral again."""
        ...


class StaticCollateralProvider:
    """One fixed collateral for every quote: tests, the dev stack, offline verification."""

    def __init__(self, collateral: Collateral) -> None:
        self._collateral = collateral

    def __repr__(self) -> str:
        return f"StaticCollateralProvider({self._collateral.source!r})"

    async def collateral_for(self, quote: bytes, now_s: int) -> Collateral:
        return self._collateral

    async def refresh(self) -> None:
        return None


class PccsCollateralProvider:
    """Collateral from a PCCS (or Intel PCS) URL, cached per platform until its nextUpdate.

    `fetch` is dcap-qvl's `get_collateral` (async, its own HTTP client); it is a
    parameter so that the cache can be tested without a PCCS.
    """

    def __init__(
        self,
        pccs_url: str,
        *,
        timeout_s: float = 30.0,
        max_entries: int = 256,
        fetch: CollateralFetch | None = None,
    ) -> None:
        self.pccs_url = pccs_url
        self._timeout_s = timeout_s
        self._max_entries = max_entries
        self._fetch: CollateralFetch = fetch or dcap_qvl.get_collateral
        self._cache: dict[str, Collateral] = {}
        self._quotes: dict[str, bytes] = {}  # one quote per platform: what a refresh sends
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PccsCollateralProvider({self.pccs_url!r}, cached={len(self._cache)})"

    async def collateral_for(self, quote: bytes, now_s: int) -> Collateral:
        key = _platform_key(quote)
        async with self._lock:  # one fetch per platform, even under concurrent refreshes
            cached = self._cache.get(key)
            if cached is not None and now_s < cached.next_update_s:
                return cached
            fresh = await self._fetch_collateral(quote)
            if len(self._cache) >= self._max_entries:
                self._cache.clear()
                self._quotes.clear()
            self._cache[key] = fresh
            self._quotes[key] = quote
            return fresh

    async def refresh(self) -> None:
        """Fetch every cached platform's collateral again. One that cannot be fetched
        keeps its cached copy (until its nextUpdate, as `collateral_for` has it)."""
        async with self._lock:
            for key, quote in list(self._quotes.items()):
                try:
                    self._cache[key] = await self._fetch_collateral(quote)
                except AttestationFailed as failure:
                    _log.warning("attestation.collateral_refresh_failed", reason=failure.reason)

    async def _fetch_collateral(self, quote: bytes) -> Collateral:
        try:
            async with asyncio.timeout(self._timeout_s):
                parsed = await self._fetch(self.pccs_url, quote)
            text = str(parsed.to_json())
        except BaseException as exc:  # network, PCCS and pyo3 errors alike: fail closed
            if not rejects(exc):
                raise
            reason = f"PCCS {self.pccs_url}: {summarize(exc)}"
            raise AttestationFailed("collateral_unavailable", reason) from exc
        return Collateral.from_json(text, source=self.pccs_url)


def _platform_key(quote: bytes) -> str:
    """FMSPC, CA and PCK chain: the inputs that decide which collateral a quote needs."""
    try:
        parsed = dcap_qvl.parse_quote(quote)
        chain = parsed.cert_chain_pem_bytes() or b""
        return f"{parsed.fmspc()}:{parsed.ca()}:{hashlib.sha256(bytes(chain)).hexdigest()}"
    except BaseException as exc:  # a pyo3 panic derives from BaseException
        if not rejects(exc):
            raise
        raise AttestationFailed("quote_format", f"no platform id: {summarize(exc)}") from exc
