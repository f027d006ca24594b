"""The catalog of confidential models and the gate every chat request passes."""

from teegate.catalog._catalog import Catalog
from teegate.catalog._describe import describe, describe_servable, list_servable
from teegate.catalog._floor import AttestationFloor
from teegate.catalog._gate import (
    Admitted,
    AttestationStatus,
    AttestationView,
    Capabilities,
    admit,
)
from teegate.catalog._model import (
    CAPABILITY_TAGS,
    CatalogModel,
    Price,
    parse_entry,
)
from teegate.catalog._sync import CatalogSource, CatalogSync
from teegate.errors import CatalogEntryError

__all__ = [
    "CAPABILITY_TAGS",
    "Admitted",
    "AttestationFloor",
    "AttestationStatus",
    "AttestationView",
    "Capabilities",
    "Catalog",
    "CatalogEntryError",
    "CatalogModel",
    "CatalogSource",
    "CatalogSync",
    "Price",
    "admit",
    "describe",
    "describe_servable",
    "list_servable",
    "parse_entry",
]
