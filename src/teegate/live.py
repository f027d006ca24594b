"""The live view of the upstreams: clients, attestation verdicts and the synced catalog.

The gateway serves from it, and `teegate models` / `teegate attest` build the
very same view, so the CLI shows exactly what the gate would accept.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

from teegate.assurance import (
    AttestationRuntime,
    ChuteAttestations,
    UpstreamAssurance,
    build_attestation,
    evidence_ssl_context,
)
from teegate.catalog import Catalog, CatalogEntryError, CatalogSource, CatalogSync, parse_entry
from teegate.config import Settings
from teegate.upstream import Listing, UpstreamClient


@dataclass(frozen=True)
class LiveUpstreams:
    clients: dict[str, UpstreamClient]
    attestation: AttestationRuntime | None
    assurance: UpstreamAssurance
    catalog: Catalog
    sync: CatalogSync


@contextlib.asynccontextmanager
async def open_live_upstreams(settings: Settings) -> AsyncIterator[LiveUpstreams]:
    """Attest first (the catalog of an attested-tls upstream is read over the pinned
    channel), then sync the catalog once (which lists the chutes to attest), then
    attest those chutes; the caller runs `sync.run()` if it stays."""
    attestation = build_attestation(settings)
    assurance = UpstreamAssurance(settings.upstreams, attestation.attestor if attestation else None)
    clients = {
        u.name: UpstreamClient(
            u,
            settings.timeouts,
            pool_size=settings.upstream_pool_size,
            ssl_context=evidence_ssl_context(u),  # chutes in development only
            current_pin=functools.partial(_pin_of, assurance, u.name),
        )
        for u in settings.upstreams
    }
    try:
        if attestation is not None:
            await attestation.attest_pending()
        catalog = Catalog()
        sources: list[CatalogSource] = [
            ChutesCatalog(client, attestation.chutes)
            if attestation is not None and name in attestation.chutes.upstreams
            else client
            for name, client in clients.items()
        ]
        sync = CatalogSync(
            catalog, sources, markup=settings.markup, interval_s=settings.catalog_refresh_s
        )
        await sync.sync_once()
        if attestation is not None:
            await attestation.start()
        yield LiveUpstreams(clients, attestation, assurance, catalog, sync)
    finally:
        if attestation is not None:
            await attestation.aclose()
        for client in clients.values():
            await client.aclose()


class ChutesCatalog:
    """A chutes upstream's catalog source: each listing also updates its attested chutes
    (the chute ids of its confidential models, parsed as the catalog parses them)."""

    def __init__(self, client: UpstreamClient, chutes: ChuteAttestations) -> None:
        self.name = client.name
        self._client = client
        self._chutes = chutes

    def __repr__(self) -> str:
        return f"ChutesCatalog({self.name!r})"

    async def list_models(self) -> Listing:
        listing = await self._client.list_models()
        await self._chutes.follow(self.name, _chute_ids(self.name, listing))
        return listing


def _chute_ids(upstream: str, listing: Listing) -> set[str]:
    ids = set()
    for entry in listing.entries:
        try:
            model = parse_entry(entry, upstream=upstream, markup=Decimal(1))
        except CatalogEntryError:
            continue  # the catalog skips it too (and logs why)
        if model.confidential and model.chute_id is not None:
            ids.add(model.chute_id)
    return ids


def _pin_of(assurance: UpstreamAssurance, upstream: str) -> bytes | None:
    return assurance.upstream_status(upstream).tls_pin
