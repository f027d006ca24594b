"""Embeddings from admission to their answer, in chat's order: the gate admits, the
meter holds the inputs' token bound, and only then does a byte go upstream; the
answer (chat's WholeAnswer) settles the hold from the upstream's usage once sent,
and a failed upstream call voids it through chat's own failure path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from teegate.apikeys import Principal
from teegate.billing import HoldRequest, Outcome, Rates
from teegate.catalog import Admitted, AttestationView, Capabilities, Catalog, admit, serves
from teegate.chat import Answer, Meter, WholeAnswer, upstream_failed
from teegate.embeddings._request import EmbeddingsRequest, check_against_model

MODALITY = "embeddings"
NEEDS = Capabilities(modality=MODALITY)


class EmbeddingsUpstream(Protocol):
    async def embed(self, body: bytes, *, pin: bytes | None) -> tuple[bytes, dict[str, Any]]:
        """The embeddings: their bytes as sent, and their parse."""
        ...


class EmbeddingsService:
    def __init__(
        self,
        catalog: Catalog,
        attestation: AttestationView,
        upstreams: Mapping[str, EmbeddingsUpstream],
        meter: Meter,
    ) -> None:
        self._catalog = catalog
        self._attestation = attestation
        self._upstreams = upstreams
        self._meter = meter

    def is_open(self) -> bool:
        """While no attested confidential embedding model is offered, the endpoint is
        closed: the route answers not_available and nothing is parsed or held."""
        return serves(self._catalog, self._attestation, MODALITY)

    async def answer(
        self, principal: Principal, request: EmbeddingsRequest, request_id: str
    ) -> Answer:
        """The upstream's embeddings, held for and not yet sent: sending settles the hold."""
        admitted = admit(self._catalog, self._attestation, request.model, NEEDS)
        check_against_model(request, admitted.model)
        hold = await self._meter.place(_hold_request(request_id, principal, admitted, request))
        client = self._upstreams[admitted.model.upstream]
        try:  # re-encoded, not relayed: the upstream reads exactly the body the gate read
            raw, body = await client.embed(
                orjson.dumps(request.body), pin=admitted.attestation.tls_pin
            )
        except BaseException as exc:
            await upstream_failed(self._meter, hold, self._attestation, admitted, exc)
            raise
        return WholeAnswer(admitted, self._meter, hold, raw, Outcome.of_embeddings(body))


def _hold_request(
    request_id: str, principal: Principal, admitted: Admitted, request: EmbeddingsRequest
) -> HoldRequest:
    """The inputs' token bound at the model's marked-up prompt price; nothing is generated."""
    model = admitted.model
    return HoldRequest(
        request_id=request_id,
        account_id=principal.account_id,
        key_id=principal.key_id,
        model=model.id,
        rates=Rates(model.price.prompt, model.price.completion),
        stream=False,
        body=request.body,
        max_output_tokens=0,
        choices=1,
        prompt_tokens=request.prompt_tokens,
    )
