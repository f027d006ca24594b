"""The gate: an inference request (chat, embeddings) reaches an upstream only through here.

The catalog says which upstreams offer a model confidentially; attestation
says which of those are proven right now. Anything short of both is refused
before a hold is placed or a byte goes upstream (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from teegate.attestation import E2eeKeys
from teegate.catalog._catalog import Catalog
from teegate.catalog._model import CatalogModel
from teegate.errors import (
    InvalidRequest,
    ModelNotConfidential,
    ModelNotFound,
    UnsupportedCapability,
)
from teegate.invariants import InvariantViolation

if TYPE_CHECKING:
    from teegate.attestation import Verdict
    from teegate.catalog._floor import AttestationFloor


@dataclass(frozen=True, slots=True)
class AttestationStatus:
    """What the gate needs of a verdict: whether it passes now, and how it was reached."""

    passed: bool
    mode: str
    reason: str = ""
    header: str = ""
    verified_at: int | None = None
    tls_pin: bytes | None = field(default=None, repr=False)
    # How inference traffic is tied to the attested TEE: "pinned" (attested-tls),
    # "unbound" (chutes: CA-verified TLS only, no end-to-end encryption to the
    # attested key), "" when there is no evidence (provider-asserted, failures).
    channel: str = ""
    # What a key's attestation floor reads (catalog.AttestationFloor): the verdict's
    # TCB status, whether it carried GPU evidence, its measurement registers.
    tcb_status: str | None = None
    gpu: bool = False
    measurements: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The passing verdict itself, which a receipt names and the transparency log holds.
    verdict: Verdict | None = field(default=None, repr=False, compare=False)
    # attested-tls with EHBP: the HPKE and usage keys the verdict's quote bound, which
    # an encrypted request needs (None: the upstream cannot take one).
    e2ee: E2eeKeys | None = field(default=None, repr=False)


class AttestationView(Protocol):
    def status(self, offer: CatalogModel) -> AttestationStatus:
        """The offer's attestation now: its upstream's, or for chutes its chute's."""
        ...

    def distrust(self, upstream: str, reason: str) -> None:
        """Drop the upstream's verdict now (its TLS key changed) and re-attest it."""
        ...

    async def reports(self, offer: CatalogModel, nonce: bytes | None) -> list[dict[str, Any]]:
        """The evidence behind the offer's verdicts, fresh for the client's nonce if given."""
        ...


@dataclass(frozen=True, slots=True)
class Admitted:
    model: CatalogModel
    attestation: AttestationStatus


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The capability tags a request needs, each with the request field that needs it,
    and the modality of the endpoint it came to."""

    needed: tuple[tuple[str, str], ...] = ()
    modality: str = "chat"


def admit(
    catalog: Catalog,
    attestation: AttestationView,
    model_id: str,
    needs: Capabilities,
    floor: AttestationFloor | None = None,
) -> Admitted:
    """The first capable offer whose attestation passes now (and meets the key's
    floor, if it has one); otherwise the reason none does."""
    offers = catalog.servable(model_id)
    if not offers:
        _refuse_unservable(catalog, model_id)
    capable = [
        offer
        for offer in offers
        if offer.modality == needs.modality and _missing_capability(offer, needs) is None
    ]
    if not capable:
        _refuse_capability(offers[0], needs)
    failures = []
    for offer in capable:
        status = offer_status(offer, attestation)
        if not status.passed:
            failures.append(status.reason)
        elif floor is None:
            return Admitted(offer, status)
        elif (unmet := floor.unmet(offer.upstream, status)) is None:
            return Admitted(offer, replace(status, header=status.header + floor.header))
        else:
            failures.append(f"the key's attestation policy is not met: {unmet}")
    raise ModelNotConfidential(
        f"Model '{model_id}' is not Confidential Compute right now: its attestation "
        f"did not pass ({'; '.join(failures)})."
    )


def serves(catalog: Catalog, attestation: AttestationView, modality: str) -> bool:
    """The switch of a modality's endpoints: open while one of its confidential offers
    passes attestation now, so a catalog sync or a verdict opens or closes it."""
    return any(offer_status(o, attestation).passed for o in catalog.offers_of(modality))


def offer_status(offer: CatalogModel, attestation: AttestationView) -> AttestationStatus:
    """The offer's attestation, and that its catalog was read over a trusted channel
    (an unauthenticated listing could carry a spoofed price)."""
    status = attestation.status(offer)
    if status.passed and not offer.trusted_listing:
        return AttestationStatus(
            False, status.mode, "the catalog has not been read over the attested channel yet"
        )
    return status


def _refuse_unservable(catalog: Catalog, model_id: str) -> NoReturn:
    if not catalog.is_known(model_id):
        raise ModelNotFound(model_id)
    message = f"Model '{model_id}' is not Confidential Compute."
    alternative = catalog.suggest_alternative(model_id)
    if alternative is not None:
        message += f" Use '{alternative}' instead."
    raise ModelNotConfidential(message)


_A_MODEL_OF = {
    "chat": "a chat model",
    "embeddings": "an embedding model",
    "images": "an image model",
    "audio": "an audio model",
    "video": "a video model",
    "moderations": "a moderation model",
    "fine_tuning": "a fine-tuning model",
}

_CONTENT_PARTS = {
    "vision": "image_url content parts",
    "audio": "input_audio content parts",
    "file": "file content parts",
}


def _missing_capability(model: CatalogModel, needs: Capabilities) -> tuple[str, str] | None:
    for tag, param in needs.needed:
        if tag not in model.tags:
            return tag, param
    return None


def _refuse_capability(model: CatalogModel, needs: Capabilities) -> NoReturn:
    if model.modality != needs.modality:
        raise InvalidRequest(
            f"Model '{model.id}' is {_A_MODEL_OF[model.modality]}, not "
            f"{_A_MODEL_OF[needs.modality]}: use the {model.modality} endpoint.",
            param="model",
            code="model_not_supported",
        )
    missing = _missing_capability(model, needs)
    if missing is None:
        raise InvariantViolation(f"refusing '{model.id}' a capability it has")
    tag, param = missing
    raise UnsupportedCapability(
        f"Model '{model.id}' does not support {_CONTENT_PARTS.get(tag, param)} "
        f"(needs capability '{tag}').",
        param=param,
    )
