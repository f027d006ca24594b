"""An end-to-end encrypted chat request (EHBP): admitted, limited, held and billed on
its clear headers and the enclave's signed usage, and relayed without being read.

The body is ciphertext only the attested enclave can open, so everything the
gateway decides comes from what the client sends in clear beside it:

    Ehbp-Encapsulated-Key    the request's HPKE encapsulated key (EHBP; 64 hex)
    X-TEE-Model              the model, which the enclave checks against the body
    X-TEE-Max-Output-Tokens  the output ceiling held for; the enclave refuses a body
                             asking for more (max_tokens * n)

The prompt is held at its ciphertext's length in tokens (ciphertext is longer than
the plaintext, and the plaintext JSON longer than the text a tokenizer reads). The
enclave's answer is relayed byte for byte; it is settled from the usage record the
enclave signs with the key its quote binds (`X-TEE-Usage`, in the response head
for a whole answer, fetched by request id after the body for a stream). A record
missing, malformed or not signed by that key settles by the byte fallback on the
ciphertext relayed: never free.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from teegate.attestation import E2eeKeys, read_signed_usage
from teegate.billing import REQUEST_OVERHEAD_TOKENS, Hold, Outcome, Usage
from teegate.catalog import Admitted
from teegate.chat._answer import Answer
from teegate.chat._seams import Meter, ResponseHead, Sink
from teegate.errors import InvalidRequest, TeegateError

log = structlog.get_logger("teegate.chat")

ENCAPSULATED_KEY_HEADER = "ehbp-encapsulated-key"
MODEL_HEADER = "x-tee-model"
MAX_OUTPUT_TOKENS_HEADER = "x-tee-max-output-tokens"
REQUEST_ID_HEADER = "x-request-id"
USAGE_HEADER = "x-tee-usage"
MAX_OUTPUT_TOKENS_LIMIT = 10_000_000
_ENCAPSULATED_KEY = re.compile(r"[0-9a-fA-F]{64}")
_MODEL = re.compile(r"[\x21-\x7e]{1,256}")


@dataclass(frozen=True, slots=True)
class SealedRequest:
    """What the gateway knows of an encrypted request: its clear headers and its size."""

    model: str
    max_output_tokens: int
    encapsulated_key: str
    body: bytes = field(repr=False)

    @property
    def prompt_tokens(self) -> int:
        """The prompt's upper bound: the ciphertext's bytes plus the template's overhead."""
        return len(self.body) + REQUEST_OVERHEAD_TOKENS

    def upstream_headers(self, request_id: str) -> dict[str, str]:
        """What goes to the enclave in clear beside the ciphertext."""
        return {
            ENCAPSULATED_KEY_HEADER: self.encapsulated_key,
            MODEL_HEADER: self.model,
            MAX_OUTPUT_TOKENS_HEADER: str(self.max_output_tokens),
            REQUEST_ID_HEADER: request_id,
        }


def is_sealed(headers: Mapping[str, str]) -> bool:
    """The one check a plain request pays: is the EHBP header there?"""
    return ENCAPSULATED_KEY_HEADER in headers


def parse_sealed_request(headers: Mapping[str, str], body: bytes) -> SealedRequest:
    """The clear headers of an encrypted request, or a 400 naming the header at fault."""
    key = headers.get(ENCAPSULATED_KEY_HEADER, "")
    if not _ENCAPSULATED_KEY.fullmatch(key):
        raise InvalidRequest(
            "Ehbp-Encapsulated-Key must be 64 hexadecimal characters (an X25519 key).",
            param=ENCAPSULATED_KEY_HEADER,
            code="invalid_value",
        )
    model = headers.get(MODEL_HEADER)
    if model is None:
        raise _missing(MODEL_HEADER, "the model the encrypted body asks for")
    if not _MODEL.fullmatch(model):
        raise InvalidRequest("X-TEE-Model is not a model id.", param=MODEL_HEADER)
    ceiling = headers.get(MAX_OUTPUT_TOKENS_HEADER)
    if ceiling is None:
        raise _missing(MAX_OUTPUT_TOKENS_HEADER, "the most output tokens the body may ask for")
    if not ceiling.isdigit() or not 1 <= int(ceiling) <= MAX_OUTPUT_TOKENS_LIMIT:
        raise InvalidRequest(
            f"X-TEE-Max-Output-Tokens must be an integer from 1 to {MAX_OUTPUT_TOKENS_LIMIT}.",
            param=MAX_OUTPUT_TOKENS_HEADER,
            code="invalid_value",
        )
    if not body:
        raise InvalidRequest("An encrypted request needs a body.", code="missing_body")
    return SealedRequest(model, int(ceiling), key.lower(), body)


def _missing(header: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"An encrypted (EHBP) request must name {what} in the clear header "
        f"'{header}': the gateway cannot read the body.",
        param=header,
        code="missing_required_header",
    )


class SealedReply(Protocol):
    """The enclave's answer to an encrypted request, opened and not yet read."""

    @property
    def head(self) -> ResponseHead:
        """Status and the headers the client needs (EHBP's response nonce among them)."""
        ...

    @property
    def usage(self) -> str | None:
        """`X-TEE-Usage` if the enclave sent it with the head (whole answers)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: ciphertext frames, or an enclave's refusal."""
        ...

    async def usage_after(self, request_id: str) -> str | None:
        """After the body: the signed usage the enclave kept for `request_id`, if any."""
        ...

    def close(self) -> None: ...


class SealedUpstream(Protocol):
    async def open_sealed(
        self, body: bytes, headers: Mapping[str, str], *, pin: bytes | None
    ) -> SealedReply: ...


class SealedAnswer(Answer):
    """The enclave's answer, relayed blind; settled from its signed usage."""

    __slots__ = ("_keys", "_reply", "_request", "_request_id")

    concludes = True

    def __init__(
        self,
        admitted: Admitted,
        meter: Meter,
        hold: Hold,
        reply: SealedReply,
        *,
        request: SealedRequest,
        request_id: str,
        keys: E2eeKeys,
    ) -> None:
        super().__init__(admitted, meter, hold, Outcome())
        self._reply = reply
        self._request = request
        self._request_id = request_id
        self._keys = keys

    async def _deliver(self, sink: Sink) -> None:
        reply, outcome = self._reply, self._outcome
        answered = reply.head.status == 200
        try:
            await sink.start(reply.head.length, reply.head)
            async for chunk in reply.chunks():
                if answered:  # an enclave's refusal is no output
                    outcome.output_bytes += len(chunk)
                await sink.write(chunk, True)
            await sink.write(b"", False)
        except TeegateError:
            outcome.status = "upstream_error"  # the stream broke: bytes relayed are billed
            await sink.write(b"", False)
            return
        finally:
            reply.close()
        if not answered:
            outcome.status = "refused"
            return
        outcome.status = "ok"
        outcome.finished = True

    async def _conclude(self) -> None:
        """The signed usage of a complete answer, read once the body is over (a
        stream's client leaves at its last frame: that must not cost the record)."""
        outcome = self._outcome
        if outcome.status == "ok":
            try:
                outcome.usage = await self._signed_usage()
            except Exception as exc:  # the fallback bills it; the settlement must go on
                log.warning(
                    "e2ee_usage_failed", request_id=self._request_id, error=type(exc).__name__
                )
        log.debug(  # what the operator can know of an encrypted request: sizes, not content
            "e2ee_relayed",
            request_id=self._request_id,
            model=self._request.model,
            status=outcome.status,
            ciphertext_in=len(self._request.body),
            ciphertext_out=outcome.output_bytes,
            signed_usage=outcome.usage is not None,
        )

    async def _signed_usage(self) -> Usage | None:
        value = self._reply.usage or await self._reply.usage_after(self._request_id)
        record = read_signed_usage(
            value,
            self._keys.usage_key,
            request_id=self._request_id,
            encapsulated_key=self._request.encapsulated_key,
            model=self._request.model,
        )
        if record is None:
            log.warning(
                "e2ee_usage_unverified",
                request_id=self._request_id,
                present=value is not None,
            )
            return None
        return Usage(record.prompt_tokens, record.completion_tokens)
