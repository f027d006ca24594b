"""The chat completion flow: request validation, admission, relay and outcomes."""

from teegate.chat._outcome import Outcome, Status, Tally, Usage, read_usage
from teegate.chat._request import ChatRequest, check_against_model, parse_chat_request
from teegate.chat._service import (
    ChatService,
    Completion,
    Meter,
    Reservation,
    StreamedCompletion,
    Ticket,
)

__all__ = [
    "ChatRequest",
    "ChatService",
    "Completion",
    "Meter",
    "Outcome",
    "Reservation",
    "Status",
    "StreamedCompletion",
    "Tally",
    "Ticket",
    "Usage",
    "check_against_model",
    "parse_chat_request",
    "read_usage",
]
