"""Everything one devstack app shares between requests, built once by `build_app`."""

from __future__ import annotations

from dataclasses import dataclass

from teegate.devstack._catalog import Catalog
from teegate.devstack._config import DevstackConfig
from teegate.devstack._faults import FAULTS, FaultState
from teegate.devstack._stats import Stats


@dataclass
class DevstackState:
    config: DevstackConfig
    catalog: Catalog
    faults: FaultState
    stats: Stats

    @classmethod
    def from_config(
        cls, config: DevstackConfig, *, known_faults: frozenset[str] = FAULTS
    ) -> DevstackState:
        """Load the catalog now, so a bad catalog path fails at start-up."""
        return cls(
            config=config,
            catalog=Catalog.load(config.catalog_path, embeddings=config.embeddings),
            faults=FaultState(config.faults, known=known_faults),
            stats=Stats(),
        )
