"""A chat completion from admission to its answer.

Order is the contract: the gate admits, the meter places a hold, and only then
does a byte go upstream; whatever happens after, the hold is settled exactly
once from what was actually delivered: here if the upstream call fails, by the
Answer once it has been sent otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from teegate.apikeys import KeyPolicy, Principal
from teegate.billing import HoldRequest, Outcome, Rates
from teegate.catalog import Admitted, AttestationView, Catalog, admit
from teegate.chat._answer import Answer, StreamedAnswer, WholeAnswer, settle
from teegate.chat._request import ChatRequest, check_against_model
from teegate.chat._seams import Meter, Upstream
from teegate.errors import ModelNotConfidential, UpstreamKeyChanged


class ChatService:
    def __init__(
        self,
        catalog: Catalog,
        attestation: AttestationView,
        upstreams: Mapping[str, Upstream],
        meter: Meter,
    ) -> None:
        self._catalog = catalog
        self._attestation = attestation
        self._upstreams = upstreams
        self._meter = meter

    def admit(self, request: ChatRequest, policy: KeyPolicy | None = None) -> Admitted:
        """The gate, narrowed by the key's policy if it has one: a model outside its
        allow-list is refused before the catalog is consulted."""
        if policy is None:
            admitted = admit(self._catalog, self._attestation, request.model, request.needs)
        else:
            policy.check_model(request.model)
            admitted = admit(
                self._catalog, self._attestation, request.model, request.needs, policy.attestation
            )
        check_against_model(request, admitted.model)
        return admitted

    async def answer(self, principal: Principal, request: ChatRequest, request_id: str) -> Answer:
        """The upstream's answer, held for and not yet sent: sending it settles the hold."""
        admitted = self.admit(request, principal.policy)
        hold = await self._meter.place(_hold_request(request_id, principal, admitted, request))
        client = self._upstreams[admitted.model.upstream]
        pin = admitted.attestation.tls_pin
        try:
            if request.stream:
                stream = await client.open_stream(_stream_body(request), pin=pin)
                return StreamedAnswer(admitted, self._meter, hold, stream, request.include_usage)
            raw, body = await client.complete(orjson.dumps(request.body), pin=pin)
            return WholeAnswer(admitted, self._meter, hold, raw, body)
        except BaseException as exc:
            await settle(self._meter, hold, Outcome("upstream_error"))  # nothing delivered
            self._refuse_if_key_changed(admitted, exc)
            raise

    def _refuse_if_key_changed(self, admitted: Admitted, exc: BaseException) -> None:
        """A key other than the attested one means the attestation no longer holds:
        nothing was sent (the handshake failed), the verdict is dropped, and the
        caller hears model_not_confidential while the upstream is re-attested."""
        if isinstance(exc, UpstreamKeyChanged):
            self._attestation.distrust(admitted.model.upstream, str(exc))
            raise ModelNotConfidential(
                f"Model '{admitted.model.id}' is not Confidential Compute right now: "
                "its upstream's TLS key no longer matches its attestation."
            ) from exc


def _hold_request(
    request_id: str, principal: Principal, admitted: Admitted, request: ChatRequest
) -> HoldRequest:
    """Priced at the catalog's marked-up price as admitted, right now."""
    model = admitted.model
    return HoldRequest(
        request_id=request_id,
        account_id=principal.account_id,
        key_id=principal.key_id,
        model=model.id,
        rates=Rates(model.price.prompt, model.price.completion),
        stream=request.stream,
        body=request.body,
        max_output_tokens=request.max_output_tokens(),
        choices=request.choices(),
    )


def _stream_body(request: ChatRequest) -> bytes:
    """The upstream always reports usage (it is billed); the relay keeps it from a
    client that did not ask for it."""
    body = dict(request.body)
    body["stream_options"] = {**(request.body.get("stream_options") or {}), "include_usage": True}
    return orjson.dumps(body)
