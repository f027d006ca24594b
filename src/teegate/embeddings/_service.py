"""Embeddings from admission to their answer, in chat's order: the gate admits, the
meter holds the inputs' token bound, and only then does a byte go upstream; the
answer (chat's WholeAnswer) settles the hold from the upstream's usage once sent,
and a failed upstream call voids it through chat's own failure path."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

import orjson

from teegate.apikeys import Principal
from teegate.billing import HoldRequest, Outcome
from teegate.catalog import Admitted, AttestationView, Capabilities, Catalog, admit, serves
from teegate.chat import (
    NO_TRACE,
    Answer,
    Idempotency,
    Meter,
    Trace,
    WholeAnswer,
    hold_request,
    reserve_tokens,
    upstream_failed,
)
from teegate.embeddings._request import EmbeddingsRequest, check_against_model
from teegate.ratelimit import RateLimiter

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
        *,
        limiter: RateLimiter,
        trace: Trace = NO_TRACE,
    ) -> None:
        self._catalog = catalog
        self._trace = trace
        self._attestation = attestation
        self._upstreams = upstreams
        self._meter = meter
        self._limiter = limiter

    def is_open(self) -> bool:
        """While no attested confidential embedding model is offered, the endpoint is
        closed: the route answers not_available and nothing is parsed or held."""
        return serves(self._catalog, self._attestation, MODALITY)

    async def answer(
        self,
        principal: Principal,
        request: EmbeddingsRequest,
        request_id: str,
        headers: MutableMapping[str, str] | None = None,
        idempotency: Idempotency | None = None,
    ) -> Answer:
        """The upstream's embeddings, held for and not yet sent: sending settles the hold.
        The key's policy fences them as it fences chat: allow-list, attestation floor,
        token limit and budgets."""
        policy = principal.policy
        with self._trace.step("gate", request.model):
            if policy is None:
                admitted = admit(self._catalog, self._attestation, request.model, NEEDS)
            else:
                policy.check_model(request.model)
                admitted = admit(
                    self._catalog, self._attestation, request.model, NEEDS, policy.attestation
                )
            check_against_model(request, admitted.model)
        meter = self._meter
        if policy is not None and policy.tpm is not None:
            meter = await reserve_tokens(
                meter,
                self._limiter,
                principal.key_id,
                tokens=request.prompt_tokens,
                tpm=policy.tpm,
                headers=headers,
            )
        hold = await meter.place(
            _hold_request(request_id, principal, admitted, request, idempotency)
        )
        client = self._upstreams[admitted.model.upstream]
        try:  # re-encoded, not relayed: the upstream reads exactly the body the gate read
            raw, body = await client.embed(
                orjson.dumps(request.body), pin=admitted.attestation.tls_pin
            )
        except BaseException as exc:
            await upstream_failed(meter, hold, self._attestation, admitted, exc, body=request.body)
            raise
        return WholeAnswer(admitted, meter, hold, raw, Outcome.of_embeddings(body))


def _hold_request(
    request_id: str,
    principal: Principal,
    admitted: Admitted,
    request: EmbeddingsRequest,
    idempotency: Idempotency | None,
) -> HoldRequest:
    """The inputs' token bound at the model's marked-up prompt price; nothing is generated."""
    return hold_request(
        request_id,
        principal,
        admitted,
        request.body,
        stream=False,
        max_output_tokens=0,
        choices=1,
        prompt_tokens=request.prompt_tokens,
        idempotency=idempotency,
    )
