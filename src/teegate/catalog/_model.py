"""One servable model as the gate sees it, parsed from an upstream's catalog entry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from teegate.billing import marked_up_price
from teegate.errors import CatalogEntryError

CAPABILITY_TAGS = frozenset(
    {"tools", "json_mode", "structured_outputs", "reasoning", "vision", "audio", "file"}
)
# What a model reads besides text, as catalogs list it in `input_modalities`.
MODALITY_TAGS = {"image": "vision", "audio": "audio", "file": "file"}
MODALITIES = ("chat", "embeddings", "images", "audio", "video", "moderations", "fine_tuning")
"""What a model serves, one endpoint family each; every non-chat endpoint opens only
while an attested confidential model of its modality is in the catalog."""
# What a model produces, as catalogs list it in `output_modalities` (or name it in
# `type`): the first one that is not text decides; text alone is chat.
_OUTPUT_MODALITY = {
    "embedding": "embeddings",
    "embeddings": "embeddings",
    "image": "images",
    "audio": "audio",
    "speech": "audio",
    "transcription": "audio",
    "video": "video",
    "moderation": "moderations",
    "moderations": "moderations",
}
# A chute id goes into the evidence URL's path: no separators, no dot segments.
_CHUTE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


@dataclass(frozen=True, slots=True)
class Price:
    """nano-USD per 1M tokens."""

    prompt: int
    completion: int


@dataclass(frozen=True, slots=True)
class CatalogModel:
    id: str
    upstream: str
    confidential: bool
    context_length: int
    max_output_length: int
    tags: frozenset[str]
    price: Price
    upstream_price: Price
    created: int
    owned_by: str
    description: str
    trusted_listing: bool = True
    chute_id: str | None = None  # Chutes: the chute serving this model (attested per chute)
    modality: str = "chat"


def parse_entry(
    entry: dict[str, Any], *, upstream: str, markup: Decimal, trusted: bool = True
) -> CatalogModel:
    """Read one `/v1/models` entry; JSON numbers must arrive as Decimal (parse_float)."""
    if not isinstance(entry, dict):
        raise CatalogEntryError(f"catalog entry is a {type(entry).__name__}, not an object")
    try:
        pricing = entry["pricing"]
        prompt_usd = _decimal(pricing["prompt"])
        completion_usd = _decimal(pricing["completion"])
        context_length = int(entry.get("context_length") or entry["max_model_len"])
        return CatalogModel(
            id=str(entry["id"]),
            upstream=upstream,
            confidential=entry.get("confidential_compute") is True,
            context_length=context_length,
            max_output_length=int(entry.get("max_output_length") or context_length),
            tags=_tags(entry),
            price=Price(
                marked_up_price(prompt_usd, markup), marked_up_price(completion_usd, markup)
            ),
            upstream_price=Price(
                marked_up_price(prompt_usd, Decimal(1)),
                marked_up_price(completion_usd, Decimal(1)),
            ),
            created=int(entry.get("created") or 0),
            owned_by=str(entry.get("owned_by") or upstream),
            description=str(entry.get("description") or ""),
            trusted_listing=trusted,
            chute_id=_chute_id(entry.get("chute_id")),
            modality=_modality(entry),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise CatalogEntryError(f"catalog entry {entry.get('id')!r}: {exc!r}") from exc


def _tags(entry: dict[str, Any]) -> frozenset[str]:
    features = frozenset(entry.get("supported_features") or ()) & CAPABILITY_TAGS
    modalities = frozenset(entry.get("input_modalities") or ())
    return features | {tag for kind, tag in MODALITY_TAGS.items() if kind in modalities}


def _modality(entry: dict[str, Any]) -> str:
    kinds = [entry.get("type"), *(entry.get("output_modalities") or ())]
    for kind in kinds:
        modality = _OUTPUT_MODALITY.get(kind) if isinstance(kind, str) else None
        if modality is not None:
            return modality
    return "chat"


def _chute_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _CHUTE_ID.fullmatch(value):
        raise CatalogEntryError("chute_id must be 1-128 letters, digits, '-' or '_'")
    return value


def _decimal(value: object) -> Decimal:
    """A price: exact, finite and never negative (a negative price would pay the caller)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise CatalogEntryError(f"price must be a decimal number, got {type(value).__name__}")
    price = Decimal(value)
    if not price.is_finite() or price < 0:
        raise CatalogEntryError(f"price must be a finite, non-negative number, got {value}")
    return price
