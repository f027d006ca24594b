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
from teegate.chat._seams import (
    NO_TRACE,
    Idempotency,
    Meter,
    NoTrace,
    Receipts,
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
    "NO_TRACE",
    "Answer",
    "ChatRequest",
    "ChatService",
    "Idempotency",
    "Meter",
    "NoTrace",
    "Receipts",
    "Sink",
    "TokenWindowMeter",
    "Trace",
    "Upstream",
    "UpstreamStream",
    "WholeAnswer",
    "check_against_model",
    "hold_request",
    "parse_chat_request",
    "parse_json_object",
    "reserve_tokens",
    "upstream_failed",
    "upstream_refusal",
]
