"""Shape a Completion as OpenAI's `chat.completion` body or `chat.completion.chunk`s.

Field for field what OpenAI sends (including `refusal: null`, `logprobs: null`
and `usage: null` on intermediate chunks when usage was asked for), because
the gateway must pass these through to the official SDKs unchanged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from teegate.devstack._generate import Completion, ToolCall

SYSTEM_FINGERPRINT = "fp_devstack"


@dataclass(frozen=True)
class ResponseMeta:
    """What every chunk of one answer shares."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> ResponseMeta:
        return cls(id="chatcmpl-" + uuid.uuid4().hex, created=int(time.time()), model=model)

    def header(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }


def usage_body(completion: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": completion.reasoning_tokens},
    }


def completion_body(completion: Completion, meta: ResponseMeta, *, usage: bool) -> dict[str, Any]:
    """The non-stream body; `usage` is False only under the no-usage fault."""
    choice = {
        "index": 0,
        "message": _message(completion),
        "logprobs": None,
        "finish_reason": completion.finish_reason,
    }
    body = {**meta.header("chat.completion"), "choices": [choice]}
    if usage:
        body["usage"] = usage_body(completion)
    return body


def _message(completion: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.content, "refusal": None}
    if completion.reasoning is not None:
        message["reasoning_content"] = completion.reasoning
    if completion.tool_call is not None:
        message["tool_calls"] = [_full_tool_call(completion.tool_call)]
    return message


def _full_tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def chunk_count(completion: Completion, *, usage: bool) -> int:
    """How many chunks `stream_chunks` yields, so faults can aim at the middle."""
    header = 1 if completion.tool_call else 0
    return 1 + completion.completion_tokens + header + 1 + int(usage)


def stream_chunks(
    completion: Completion, meta: ResponseMeta, *, usage: bool
) -> Iterator[dict[str, Any]]:
    """Role chunk, one chunk per token, finish chunk, then the usage chunk if `usage`.

    Built lazily, one chunk at a time, as the stream is sent.
    """
    shell = meta.header("chat.completion.chunk") | ({"usage": None} if usage else {})
    for delta in _deltas(completion):
        yield shell | {"choices": [_delta_choice(delta, None)]}
    yield shell | {"choices": [_delta_choice({}, completion.finish_reason)]}
    if usage:
        yield shell | {"choices": [], "usage": usage_body(completion)}


def _deltas(completion: Completion) -> Iterator[dict[str, Any]]:
    yield {"role": "assistant", "content": ""}
    for piece in completion.reasoning_pieces:
        yield {"reasoning_content": piece}
    for piece in completion.content_pieces:
        yield {"content": piece}
    if completion.tool_call is not None:
        yield from _tool_call_deltas(completion.tool_call)


def _tool_call_deltas(call: ToolCall) -> Iterator[dict[str, Any]]:
    """As OpenAI streams a call: id, type and name with empty arguments, then fragments."""
    function = {"name": call.name, "arguments": ""}
    yield {"tool_calls": [{"index": 0, "id": call.id, "type": "function", "function": function}]}
    for piece in call.argument_pieces:
        yield {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}


def _delta_choice(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
