"""The chat completion flow: request validation, admission, the upstream call, and
an answer that settles its hold once it has been sent."""

from teegate.chat._answer import Answer
from teegate.chat._request import ChatRequest, check_against_model, parse_chat_request
from teegate.chat._seams import Meter, Sink, Upstream, UpstreamStream
from teegate.chat._service import ChatService, TokenWindowMeter

__all__ = [
    "Answer",
    "ChatRequest",
    "ChatService",
    "Meter",
    "Sink",
    "TokenWindowMeter",
    "Upstream",
    "UpstreamStream",
    "check_against_model",
    "parse_chat_request",
]
