"""POST /v1/embeddings: deterministic unit vectors, with the faults that apply to a
whole answer.

Each vector is a feature hash of the input's words (a token array's ids): every
word adds +-1 at a few indices its hash picks, and the sum is scaled to unit
length. Equal inputs give equal vectors, inputs sharing words point the same way
(positive cosine), unrelated ones are near orthogonal: enough for tests and the
demo to check similarity search end to end.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from teegate.devstack._chat import CLIENT_CLOSED_STATUS, hang
from teegate.devstack._errors import (
    invalid_request,
    model_not_found,
    simulated_server_error,
)
from teegate.devstack._faults import (
    DROP_MID_STREAM,
    GARBAGE_SSE,
    HANG,
    HTTP_500,
    NO_USAGE,
    SLOW_FIRST_TOKEN,
)
from teegate.devstack._http import client_left_within, read_body, require_api_key
from teegate.devstack._state import DevstackState
from teegate.devstack._stream import SimulatedDropError
from teegate.devstack._usage import BYTES_PER_TOKEN

DEFAULT_DIMENSIONS = 1024
HASHES_PER_WORD = 8
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class EmbeddingsCall:
    model: str
    inputs: list[str | list[int]]
    dimensions: int | None
    base64: bool


class EmbeddingsEndpoint:
    """The embeddings route; counted before anything can refuse it, as chat is."""

    def __init__(self, state: DevstackState) -> None:
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._state.stats.embeddings_requests += 1
        response = await self._answer(Request(scope, receive))
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        state = self._state
        require_api_key(request, state.config.api_key)
        raw = await read_body(request)
        if state.faults.is_on(HTTP_500):
            raise simulated_server_error()
        if state.faults.is_on(HANG):
            return await hang(request)
        call = parse_embeddings_call(raw)
        entry = state.catalog.find(call.model)
        if entry is None or "embeddings" not in entry.get("output_modalities", ()):
            raise model_not_found(call.model)
        native = int(entry.get("dimensions") or DEFAULT_DIMENSIONS)
        dimensions = call.dimensions or native
        if dimensions > native:
            raise invalid_request(
                f"dimensions is {dimensions}, but this model has {native}.", param="dimensions"
            )
        if state.faults.is_on(SLOW_FIRST_TOKEN) and await client_left_within(
            request.receive, state.config.first_token_delay_s
        ):
            return Response(status_code=CLIENT_CLOSED_STATUS)
        body = orjson.dumps(embeddings_body(call, dimensions, not state.faults.is_on(NO_USAGE)))
        if state.faults.is_on(GARBAGE_SSE):
            return Response(b"{not json" + body[:64], media_type="application/json")
        if state.faults.is_on(DROP_MID_STREAM):
            return _dropped(body)
        return Response(body, media_type="application/json")


def parse_embeddings_call(raw: bytes) -> EmbeddingsCall:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request("The body is not JSON.", param=None, code="invalid_json") from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise invalid_request("'model' is required.", param="model")
    inputs = _inputs(body.get("input"))
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise invalid_request("dimensions must be a positive integer.", param="dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid_request("encoding_format must be float or base64.", param="encoding_format")
    return EmbeddingsCall(body["model"], inputs, dimensions, encoding == "base64")


def _inputs(value: object) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str | list) for item in value):
            return list(value)
        if all(isinstance(item, int) for item in value):
            return [value]
    raise invalid_request("input must be text or tokens, not empty.", param="input")


def embeddings_body(call: EmbeddingsCall, dimensions: int, usage: bool) -> dict[str, Any]:
    data = []
    for index, item in enumerate(call.inputs):
        vector = unit_vector(_units(item), dimensions)
        embedding: list[float] | str = _base64(vector) if call.base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    body: dict[str, Any] = {"object": "list", "data": data, "model": call.model}
    if usage:
        tokens = sum(input_tokens(item) for item in call.inputs)
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return body


def input_tokens(item: str | list[int]) -> int:
    """A token array's length; a string's ceil(bytes / 4) plus one special token,
    inside the gateway's hold bound (bytes plus two)."""
    if isinstance(item, str):
        return -(-len(item.encode()) // BYTES_PER_TOKEN) + 1
    return len(item)


def unit_vector(units: Iterable[str], dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    for unit in units:
        digest = hashlib.blake2b(unit.encode(), digest_size=4 * HASHES_PER_WORD).digest()
        for offset in range(0, len(digest), 4):
            index = int.from_bytes(digest[offset : offset + 3], "little") % dimensions
            vector[index] += 1.0 if digest[offset + 3] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:  # every hash cancelled out: still a unit vector, still deterministic
        vector[0], norm = 1.0, 1.0
    return [x / norm for x in vector]


def _units(item: str | list[int]) -> list[str]:
    if isinstance(item, str):
        return _WORD.findall(item.lower()) or [item]
    return [f"#{token}" for token in item]


def _base64(vector: list[float]) -> str:
    """As OpenAI sends it: little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _dropped(body: bytes) -> Response:
    """Headers promising the whole body, half of it, then the connection aborted."""

    async def half() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        raise SimulatedDropError("devstack fault drop-mid-stream: aborting the connection")

    return StreamingResponse(
        half(), media_type="application/json", headers={"content-length": str(len(body))}
    )
