"""The devstack's settings: what the simulated upstream serves and how it paces it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from teegate.devstack._faults import check_faults

DEFAULT_CATALOG_PATH = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class DevstackConfig:
    """How one simulated confidential upstream behaves.

    Validated on construction so a typo in a fault name fails at start-up, not
    as a fault that silently never fires.
    """

    catalog_path: Path = DEFAULT_CATALOG_PATH
    chunk_delay_s: float = 0.0
    first_token_delay_s: float = 3.0
    completion_tokens: int = 24
    api_key: str | None = field(default=None, repr=False)
    faults: frozenset[str] = frozenset()
    embeddings: bool = False
    """Serve the catalog's embedding models (`/v1/embeddings`); off, they are not listed."""

    def __post_init__(self) -> None:
        if self.chunk_delay_s < 0 or self.first_token_delay_s < 0:
            raise ValueError("delays must be >= 0 seconds")
        if self.completion_tokens < 1:
            raise ValueError("completion_tokens must be >= 1")
        object.__setattr__(self, "faults", check_faults(self.faults))
