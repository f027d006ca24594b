"""The catalog of confidential models and the gate every inference request passes."""

from teegate.catalog._catalog import Catalog
from teegate.catalog._describe import describe, describe_servable, list_servable
from teegate.catalog._floor import AttestationFloor
from teegate.catalog._gate import (
    Admitted,
    AttestationStatus,
    AttestationView,
    Capabilities,
    admit,
    serves,
)
from teegate.catalog._model import (
    CAPABILITY_TAGS,
    MODALITIES,
    CatalogModel,
    Price,
    parse_entry,
)
from teegate.catalog._sync import CatalogSource, CatalogSync
from teegate.errors import CatalogEntryError

__all__ = [
    "CAPABILITY_TAGS",
    "MODALITIES",
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
    "serves",
]
