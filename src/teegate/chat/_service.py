"""A chat completion from admission to its answer.

Order is the contract: the gate admits, the meter places a hold, and only then
does a byte go upstream; whatever happens after, the hold is settled exactly
once from what was actually delivered: here if the upstream call fails, by the
Answer once it has been sent otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import anyio
import orjson

from teegate.apikeys import KeyPolicy, Principal
from teegate.billing import (
    Hold,
    HoldRequest,
    Outcome,
    Rates,
    Settlement,
    held_completion_tokens,
    settled_tokens,
)
from teegate.catalog import Admitted, AttestationView, Capabilities, Catalog, admit
from teegate.chat._answer import Answer, StreamedAnswer, WholeAnswer, settle
from teegate.chat._request import ChatRequest, check_against_model, upstream_refusal
from teegate.chat._sealed import MODEL_HEADER, SealedAnswer, SealedRequest, SealedUpstream
from teegate.chat._seams import NO_TRACE, Idempotency, Meter, Trace, Upstream
from teegate.errors import (
    InvalidRequest,
    ModelNotConfidential,
    RateLimitExceeded,
    UpstreamKeyChanged,
    UpstreamRejected,
)
from teegate.ratelimit import RateLimiter


class ChatService:
    def __init__(
        self,
        catalog: Catalog,
        attestation: AttestationView,
        upstreams: Mapping[str, Upstream],
        meter: Meter,
        *,
        limiter: RateLimiter,
        trace: Trace = NO_TRACE,
        sealed: Mapping[str, SealedUpstream] | None = None,
    ) -> None:
        self._catalog = catalog
        self._trace = trace
        self._sealed = sealed or {}
        self._attestation = attestation
        self._upstreams = upstreams
        self._meter = meter
        self.limiter = limiter
        """Where keys' token limits count: the gateway's limiter (public, so a test can
        give it a clock of its own)."""

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

    async def answer(
        self,
        principal: Principal,
        request: ChatRequest,
        request_id: str,
        headers: MutableMapping[str, str] | None = None,
        idempotency: Idempotency | None = None,
    ) -> Answer:
        """The upstream's answer, held for and not yet sent: sending it settles the hold.

        A key with a token limit gets its `x-ratelimit-*-tokens` added to `headers`
        (those the request answers with, whatever the answer). With `idempotency`, a
        retry of a request already held is refused (409/422) instead of held again."""
        with self._trace.step("gate", request.model):
            admitted = self.admit(request, principal.policy)
        hold_request = _hold_request(request_id, principal, admitted, request, idempotency)
        meter = self._meter
        if principal.policy is not None and principal.policy.tpm is not None:
            tokens = hold_request.prompt_bound() + held_completion_tokens(
                hold_request.max_output_tokens, hold_request.choices
            )
            meter = await reserve_tokens(
                self._meter,
                self.limiter,
                principal.key_id,
                tokens=tokens,
                tpm=principal.policy.tpm,
                headers=headers,
            )
        hold = await meter.place(hold_request)
        client = self._upstreams[admitted.model.upstream]
        pin = admitted.attestation.tls_pin
        try:
            if request.stream:
                stream = await client.open_stream(_stream_body(request), pin=pin)
                return StreamedAnswer(admitted, meter, hold, stream, request.include_usage)
            raw, body = await client.complete(orjson.dumps(request.body), pin=pin)
            return WholeAnswer(admitted, meter, hold, raw, Outcome.of_response(body))
        except BaseException as exc:
            await upstream_failed(meter, hold, self._attestation, admitted, exc, body=request.body)
            raise

    async def answer_sealed(
        self,
        principal: Principal,
        request: SealedRequest,
        request_id: str,
        headers: MutableMapping[str, str] | None = None,
    ) -> SealedAnswer:
        """An encrypted request's answer, held for on its clear headers alone: the
        same gate, allow-list, token window and hold as a plain one, then relayed
        blind to the enclave whose quote binds the key the client encrypted to."""
        needs = Capabilities()
        if principal.policy is None:
            admitted = admit(self._catalog, self._attestation, request.model, needs)
        else:
            principal.policy.check_model(request.model)
            admitted = admit(
                self._catalog, self._attestation, request.model, needs, principal.policy.attestation
            )
        keys = admitted.attestation.e2ee
        client = self._sealed.get(admitted.model.upstream)
        if keys is None or client is None:
            raise InvalidRequest(
                f"Model '{request.model}' is not served by an enclave that takes "
                "end-to-end encrypted requests; send it in plain, or pick another model.",
                param=MODEL_HEADER,
                code="e2ee_unavailable",
            )
        hold_request = _sealed_hold_request(request_id, principal, admitted, request)
        meter = self._meter
        if principal.policy is not None and principal.policy.tpm is not None:
            meter = await reserve_tokens(
                self._meter,
                self.limiter,
                principal.key_id,
                tokens=request.prompt_tokens + request.max_output_tokens,
                tpm=principal.policy.tpm,
                headers=headers,
            )
        hold = await meter.place(hold_request)
        try:
            reply = await client.open_sealed(
                request.body,
                request.upstream_headers(request_id),
                pin=admitted.attestation.tls_pin,
            )
        except BaseException as exc:  # an enclave's refusal is relayed, never raised
            await upstream_failed(meter, hold, self._attestation, admitted, exc, body={})
            raise
        return SealedAnswer(
            admitted, meter, hold, reply, request=request, request_id=request_id, keys=keys
        )


def _sealed_hold_request(
    request_id: str, principal: Principal, admitted: Admitted, request: SealedRequest
) -> HoldRequest:
    return hold_request(
        request_id,
        principal,
        admitted,
        {},
        stream=False,
        max_output_tokens=request.max_output_tokens,
        choices=1,
        prompt_tokens=request.prompt_tokens,
    )


async def reserve_tokens(
    meter: Meter,
    limiter: RateLimiter,
    key_id: str,
    *,
    tokens: int,
    tpm: int,
    headers: MutableMapping[str, str] | None,
) -> TokenWindowMeter:
    """Count the tokens a hold will reserve against the key's window, or refuse before
    the hold: a 429 costs the ledger nothing. The meter returned corrects the window
    to what was billed when it settles."""
    decision = await limiter.reserve_tokens(key_id, tokens, tpm)
    if headers is not None:
        headers.update(decision.token_headers())
    if not decision.allowed:
        raise RateLimitExceeded(
            f"Rate limit reached: {tpm} tokens per minute for this key; this request "
            f"may use up to {tokens} tokens and {decision.remaining} remain in this "
            f"minute. Send less, or retry after {decision.retry_after_s} seconds.",
            retry_after_s=decision.retry_after_s,
            limit="tokens",
        )
    return TokenWindowMeter(meter, limiter, key_id, tokens, decision.window_start)


async def upstream_failed(
    meter: Meter,
    hold: Hold,
    attestation: AttestationView,
    admitted: Admitted,
    exc: BaseException,
    *,
    body: Mapping[str, Any],
) -> None:
    """The upstream call failed: nothing was delivered, so the hold is voided.

    An upstream that refused the request as invalid is the client's 400, with the
    upstream's reason if it repeats nothing of `body` (`upstream_refusal`).

    A key other than the attested one means the attestation no longer holds:
    nothing was sent (the handshake failed), the verdict is dropped, and the
    caller hears model_not_confidential while the upstream is re-attested.
    """
    await settle(meter, hold, Outcome("upstream_error"))
    if isinstance(exc, UpstreamRejected):
        raise upstream_refusal(exc, body) from exc
    if isinstance(exc, UpstreamKeyChanged):
        attestation.distrust(admitted.model.upstream, str(exc))
        raise ModelNotConfidential(
            f"Model '{admitted.model.id}' is not Confidential Compute right now: "
            "its upstream's TLS key no longer matches its attestation."
        ) from exc


def _hold_request(
    request_id: str,
    principal: Principal,
    admitted: Admitted,
    request: ChatRequest,
    idempotency: Idempotency | None,
) -> HoldRequest:
    return hold_request(
        request_id,
        principal,
        admitted,
        request.body,
        stream=request.stream,
        max_output_tokens=request.max_output_tokens(),
        choices=request.choices(),
        idempotency=idempotency,
    )


def hold_request(
    request_id: str,
    principal: Principal,
    admitted: Admitted,
    body: Mapping[str, Any],
    *,
    stream: bool,
    max_output_tokens: int,
    choices: int,
    prompt_tokens: int | None = None,
    idempotency: Idempotency | None = None,
) -> HoldRequest:
    """Who pays, at the catalog's marked-up price as admitted, right now: what every
    endpoint asks billing to hold."""
    model = admitted.model
    return HoldRequest(
        request_id=request_id,
        account_id=principal.account_id,
        key_id=principal.key_id,
        model=model.id,
        rates=Rates(model.price.prompt, model.price.completion),
        stream=stream,
        body=body,
        max_output_tokens=max_output_tokens,
        choices=choices,
        prompt_tokens=prompt_tokens,
        prompt_limit=model.context_length,
        budgeted=principal.budgeted,
        idempotency_key=None if idempotency is None else idempotency.key_hash,
        fingerprint=None if idempotency is None else idempotency.body_hash,
    )


def _stream_body(request: ChatRequest) -> bytes:
    """The upstream always reports usage (it is billed); the relay keeps it from a
    client that did not ask for it."""
    body = dict(request.body)
    body["stream_options"] = {**(request.body.get("stream_options") or {}), "include_usage": True}
    return orjson.dumps(body)


class TokenWindowMeter:
    """The meter for one request of a key with a token limit: its settlement also
    corrects the key's window from the tokens reserved to the tokens billed."""

    __slots__ = ("_key_id", "_limiter", "_meter", "_reserved", "_window_start")

    def __init__(
        self, meter: Meter, limiter: RateLimiter, key_id: str, reserved: int, window_start: int
    ) -> None:
        self._meter = meter
        self._limiter = limiter
        self._key_id = key_id
        self._reserved: int | None = reserved
        self._window_start = window_start

    async def place(self, request: HoldRequest) -> Hold:
        """A hold refused (402) or never placed releases the reservation."""
        try:
            return await self._meter.place(request)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._correct(0)
            raise

    def watch(self, hold: Hold, outcome: Outcome) -> None:
        self._meter.watch(hold, outcome)

    async def settle(self, hold: Hold, outcome: Outcome) -> Settlement | None:
        settlement = await self._meter.settle(hold, outcome)
        prompt, completion, _ = settled_tokens(
            hold, outcome.status, outcome.usage, outcome.output_bytes
        )
        await self._correct(prompt + completion)
        return settlement

    async def _correct(self, used: int) -> None:
        reserved, self._reserved = self._reserved, None
        if reserved is not None and used != reserved:  # once, by whichever comes first
            await self._limiter.correct_tokens(self._key_id, self._window_start, used - reserved)
