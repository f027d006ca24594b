"""The live view of the upstreams: clients, attestation verdicts and the synced catalog.

The gateway serves from it, and `teegate models` / `teegate attest` build the
very same view, so the CLI shows exactly what the gate would accept.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

from teegate.assurance import AttestationRuntime, UpstreamAssurance, build_attestation
from teegate.catalog import Catalog, CatalogSync
from teegate.config import Settings
from teegate.upstream import UpstreamClient


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
    channel), then sync the catalog once; the caller runs `sync.run()` if it stays."""
    clients = {
        u.name: UpstreamClient(u, settings.timeouts, pool_size=settings.upstream_pool_size)
        for u in settings.upstreams
    }
    attestation = build_attestation(settings)
    try:
        assurance = UpstreamAssurance(
            settings.upstreams, attestation.attestor if attestation else None
        )
        if attestation is not None:
            await attestation.start()
        for name, client in clients.items():
            client.current_pin = functools.partial(_pin_of, assurance, name)
        catalog = Catalog()
        sync = CatalogSync(
            catalog,
            list(clients.values()),
            markup=settings.markup,
            interval_s=settings.catalog_refresh_s,
        )
        await sync.sync_once()
        yield LiveUpstreams(clients, attestation, assurance, catalog, sync)
    finally:
        if attestation is not None:
            await attestation.aclose()
        for client in clients.values():
            await client.aclose()


def _pin_of(assurance: UpstreamAssurance, upstream: str) -> bytes | None:
    return assurance.status(upstream).tls_pin
