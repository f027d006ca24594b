"""An EHBP-encrypted chat request, as the enclave answers it.

It decrypts the body, then refuses (in clear, 400) a body whose model is not the
one the clear `X-TEE-Model` header names, or that asks for more output
(max_tokens * n) than the clear `X-TEE-Max-Output-Tokens` ceiling the gateway
held credit for; a body without max_tokens gets the ceiling as its limit. The
answer is sealed frame by frame (a whole body in one frame, a stream an event per
frame). Its usage, signed with the enclave's usage key, goes in the clear
`X-TEE-Usage` header of a whole answer; a stream's is kept for the gateway to fetch
at `GET /v1/e2ee/usage/{request_id}` once the body is over.

A body that does not decrypt gets EHBP's key-configuration problem (422
application/problem+json), which EHBP clients raise as a key mismatch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from teegate.attestation import UsageRecord
from teegate.devstack._e2ee import RESPONSE_NONCE_HEADER, EnclaveE2ee, ResponseSealer
from teegate.devstack._errors import invalid_request, json_response, model_not_found
from teegate.devstack._faults import HPKE_KEY_SWAP, NO_USAGE, USAGE_FORGED
from teegate.devstack._generate import generate_completions
from teegate.devstack._render import (
    ResponseMeta,
    chunk_count,
    completion_body,
    stream_chunks,
    usage_body,
)
from teegate.devstack._request import parse_chat_request
from teegate.devstack._state import DevstackState
from teegate.devstack._stream import SSE_HEADERS, StreamPlan, sse_events

ENCAPSULATED_KEY_HEADER = "ehbp-encapsulated-key"
MODEL_HEADER = "x-tee-model"
MAX_OUTPUT_TOKENS_HEADER = "x-tee-max-output-tokens"
USAGE_HEADER = "X-TEE-Usage"
KEY_CONFIG_PROBLEM = {
    "type": "urn:ietf:params:ehbp:error:key-config",
    "title": "key configuration mismatch",
}


def is_sealed(request: Request) -> bool:
    return ENCAPSULATED_KEY_HEADER in request.headers


async def sealed_answer(
    state: DevstackState, e2ee: EnclaveE2ee, request: Request, raw: bytes
) -> Response:
    try:
        encapsulated_key = bytes.fromhex(request.headers[ENCAPSULATED_KEY_HEADER])
        plaintext, secret = e2ee.open(
            encapsulated_key, raw, swapped=state.faults.is_on(HPKE_KEY_SWAP)
        )
    except ValueError:
        return JSONResponse(
            KEY_CONFIG_PROBLEM, status_code=422, media_type="application/problem+json"
        )
    chat = parse_chat_request(plaintext)
    ceiling = _ceiling(request)
    if request.headers.get(MODEL_HEADER) != chat.model:
        raise invalid_request(
            "X-TEE-Model names another model than the encrypted body.",
            param=MODEL_HEADER,
            code="e2ee_header_mismatch",
        )
    if (chat.max_tokens or ceiling) * chat.n > ceiling:
        raise invalid_request(
            "The encrypted body asks for more output than X-TEE-Max-Output-Tokens allows.",
            param=MAX_OUTPUT_TOKENS_HEADER,
            code="e2ee_header_mismatch",
        )
    if state.catalog.find(chat.model) is None:
        raise model_not_found(chat.model)
    chat = replace(chat, max_tokens=chat.max_tokens or ceiling)
    completions = generate_completions(
        chat,
        reasoning=state.catalog.supports(chat.model, "reasoning"),
        cap_tokens=state.config.completion_tokens,
    )
    usage = usage_body(completions)
    request_id = request.headers.get("x-request-id") or encapsulated_key.hex()
    record = UsageRecord(
        request_id,
        encapsulated_key.hex(),
        chat.model,
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    forged = state.faults.is_on(USAGE_FORGED)
    signed = record.signed(Ed25519PrivateKey.generate()) if forged else e2ee.sign(record)
    reported = not state.faults.is_on(NO_USAGE)
    sealer = e2ee.sealer(secret, encapsulated_key)
    headers = {RESPONSE_NONCE_HEADER: sealer.nonce.hex()}
    meta = ResponseMeta.new(chat.model)
    if chat.stream:
        if reported:
            e2ee.keep_usage(request_id, signed)
        in_stream = chat.include_usage
        plan = StreamPlan.for_stream(
            state.faults, state.config, chunk_count(completions, usage=in_stream)
        )
        events = sse_events(stream_chunks(completions, meta, usage=in_stream), plan)
        return StreamingResponse(
            _sealed_events(events, sealer),
            media_type="text/event-stream",
            headers=SSE_HEADERS | headers,
        )
    if reported:
        headers[USAGE_HEADER] = signed
    body = orjson.dumps(completion_body(completions, meta, usage=True))
    return Response(sealer.seal(body), media_type="application/json", headers=headers)


def usage_response(e2ee: EnclaveE2ee, request_id: str) -> Response:
    """A stream's signed usage, by the request id the gateway sent."""
    signed = e2ee.usage(request_id)
    if signed is None:
        raise invalid_request("No usage is kept for that request id.", param="request_id")
    return json_response({"request_id": request_id, "usage": signed})


def _ceiling(request: Request) -> int:
    value = request.headers.get(MAX_OUTPUT_TOKENS_HEADER, "")
    if not value.isdigit() or int(value) < 1:
        raise invalid_request(
            "An encrypted request needs X-TEE-Max-Output-Tokens, a positive integer.",
            param=MAX_OUTPUT_TOKENS_HEADER,
        )
    return int(value)


async def _sealed_events(
    events: AsyncIterator[bytes], sealer: ResponseSealer
) -> AsyncIterator[bytes]:
    """Each server-sent event in a frame of its own, sealed as it is made."""
    async for event in events:
        yield sealer.seal(event)
