"""The chat completion flow: request validation, admission, the upstream call, and
an answer that settles its hold once it has been sent. Its Answer, seams and
failure path serve every other whole-body endpoint too (embeddings)."""

from teegate.chat._answer import Answer, WholeAnswer
from teegate.chat._request import (
    ChatRequest,
    check_against_model,
    parse_chat_request,
    parse_json_object,
    upstream_refusal,
)
from teegate.chat._sealed import (
    ENCAPSULATED_KEY_HEADER,
    MAX_OUTPUT_TOKENS_HEADER,
    MODEL_HEADER,
    USAGE_HEADER,
    SealedAnswer,
    SealedReply,
    SealedRequest,
    SealedUpstream,
    is_sealed,
    parse_sealed_request,
)
from teegate.chat._seams import (
    NO_TRACE,
    Idempotency,
    Meter,
    NoTrace,
    Receipts,
    ResponseHead,
    Sink,
    Trace,
    Upstream,
    UpstreamStream,
)
from teegate.chat._service import (
    ChatService,
    TokenWindowMeter,
    hold_request,
    reserve_tokens,
    upstream_failed,
)

__all__ = [
    "ENCAPSULATED_KEY_HEADER",
    "MAX_OUTPUT_TOKENS_HEADER",
    "MODEL_HEADER",
    "NO_TRACE",
    "USAGE_HEADER",
    "Answer",
    "ChatRequest",
    "ChatService",
    "Idempotency",
    "Meter",
    "NoTrace",
    "Receipts",
    "ResponseHead",
    "SealedAnswer",
    "SealedReply",
    "SealedRequest",
    "SealedUpstream",
    "Sink",
    "TokenWindowMeter",
    "Trace",
    "Upstream",
    "UpstreamStream",
    "WholeAnswer",
    "check_against_model",
    "hold_request",
    "is_sealed",
    "parse_chat_request",
    "parse_json_object",
    "parse_sealed_request",
    "reserve_tokens",
    "upstream_failed",
    "upstream_refusal",
]
