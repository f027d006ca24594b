"""Keeps the catalog in step with each upstream's `/v1/models`.

An upstream whose catalog cannot be read keeps its last list for a while (a
blip must not take models away), then loses it: a catalog we cannot refresh
may hide a `confidential_compute` flag that turned off, so it fails closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Protocol

import structlog

from teegate.catalog._catalog import Catalog
from teegate.catalog._model import CatalogModel, parse_entry
from teegate.errors import CatalogEntryError

log = structlog.get_logger("teegate.catalog")
STALE_AFTER_INTERVALS = 3
UNTRUSTED_RETRY_S = 1.0


class CatalogListing(Protocol):
    @property
    def entries(self) -> list[dict[str, Any]]: ...

    @property
    def trusted(self) -> bool: ...


class CatalogSource(Protocol):
    name: str

    async def list_models(self) -> CatalogListing: ...


class CatalogSync:
    def __init__(
        self,
        catalog: Catalog,
        sources: Sequence[CatalogSource],
        *,
        markup: Decimal,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._sources = sources
        self._markup = markup
        self._interval_s = interval_s
        self._clock = clock
        self._last_success: dict[str, float] = {}
        self._untrusted: set[str] = set()

    async def sync_once(self) -> None:
        await asyncio.gather(*(self._sync_source(source) for source in self._sources))

    async def run(self) -> None:
        """Every interval, all upstreams; every second, those read untrusted (so an
        upstream that passes attestation becomes servable within a second)."""
        next_full = self._clock() + self._interval_s
        while True:
            await asyncio.sleep(min(UNTRUSTED_RETRY_S, self._interval_s))
            if self._clock() >= next_full:
                next_full = self._clock() + self._interval_s
                await self.sync_once()
            elif self._untrusted:
                untrusted = [s for s in self._sources if s.name in self._untrusted]
                await asyncio.gather(*(self._sync_source(s) for s in untrusted))

    async def _sync_source(self, source: CatalogSource) -> None:
        try:
            listing = await source.list_models()
        except Exception as exc:
            self._on_failure(source.name, exc)
            return
        models = self._parse(source.name, listing)
        self._catalog.replace(source.name, models)
        self._last_success[source.name] = self._clock()
        if listing.trusted:
            self._untrusted.discard(source.name)
        else:
            self._untrusted.add(source.name)

    def _parse(self, upstream: str, listing: CatalogListing) -> list[CatalogModel]:
        models = []
        for entry in listing.entries:
            try:
                models.append(
                    parse_entry(
                        entry, upstream=upstream, markup=self._markup, trusted=listing.trusted
                    )
                )
            except CatalogEntryError as exc:
                log.warning("catalog_entry_skipped", upstream=upstream, reason=str(exc))
        return models

    def _on_failure(self, upstream: str, exc: Exception) -> None:
        log.warning("catalog_sync_failed", upstream=upstream, error=type(exc).__name__)
        last = self._last_success.get(upstream)
        stale_after = self._interval_s * STALE_AFTER_INTERVALS
        if last is not None and self._clock() - last > stale_after:
            self._catalog.replace(upstream, [])
