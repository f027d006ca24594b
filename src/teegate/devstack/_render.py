"""Shape a Completion as OpenAI's `chat.completion` body or `chat.completion.chunk`s.

Field for field what OpenAI sends (including `refusal: null`, `logprobs: null`
unless asked for, and `usage: null` on intermediate chunks when usage was asked
for), because the gateway must pass these through to the official SDKs
unchanged. With `n` > 1 there is one choice per answer; in a stream each chunk
carries one of them, with its `index`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
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


def usage_body(completions: Sequence[Completion]) -> dict[str, Any]:
    """The prompt once, the completion tokens of every choice, as OpenAI bills `n`."""
    prompt = completions[0].prompt_tokens
    completion = sum(c.completion_tokens for c in completions)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": sum(c.reasoning_tokens for c in completions)
        },
    }


def completion_body(
    completions: Sequence[Completion], meta: ResponseMeta, *, usage: bool
) -> dict[str, Any]:
    """The non-stream body; `usage` is False only under the no-usage fault."""
    choices = [
        {
            "index": index,
            "message": _message(completion),
            "logprobs": _choice_logprobs(completion),
            "finish_reason": completion.finish_reason,
        }
        for index, completion in enumerate(completions)
    ]
    body = {**meta.header("chat.completion"), "choices": choices}
    if usage:
        body["usage"] = usage_body(completions)
    return body


def _message(completion: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": completion.content, "refusal": None}
    if completion.reasoning is not None:
        message["reasoning_content"] = completion.reasoning
    if completion.tool_calls:
        message["tool_calls"] = [_full_tool_call(call) for call in completion.tool_calls]
    return message


def _choice_logprobs(completion: Completion) -> dict[str, Any] | None:
    """Null unless asked for; the content's tokens, null when the answer has no content."""
    if completion.content_logprobs is None:
        return None
    content = None if completion.content is None else list(completion.content_logprobs)
    return {"content": content, "refusal": None}


def _full_tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def chunk_count(completions: Sequence[Completion], *, usage: bool) -> int:
    """How many chunks `stream_chunks` yields, so faults can aim at the middle."""
    return sum(_choice_chunk_count(c) for c in completions) + int(usage)


def _choice_chunk_count(completion: Completion) -> int:
    """Role, reasoning, content, each call's header and fragments, finish."""
    calls = sum(1 + len(call.argument_pieces) for call in completion.tool_calls)
    pieces = len(completion.reasoning_pieces) + len(completion.content_pieces)
    return 1 + pieces + calls + 1


def stream_chunks(
    completions: Sequence[Completion], meta: ResponseMeta, *, usage: bool
) -> Iterator[dict[str, Any]]:
    """Each choice's role chunk, one chunk per token, finish chunk, the choices taking
    turns as OpenAI interleaves them; then the usage chunk if `usage`.

    Built lazily, one chunk at a time, as the stream is sent.
    """
    shell = meta.header("chat.completion.chunk") | ({"usage": None} if usage else {})
    for choice in _interleaved([_choice_chunks(i, c) for i, c in enumerate(completions)]):
        yield shell | {"choices": [choice]}
    if usage:
        yield shell | {"choices": [], "usage": usage_body(completions)}


def _interleaved(streams: list[Iterator[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """One item from each stream in turn, until all are done."""
    if len(streams) == 1:
        yield from streams[0]
        return
    while streams:
        for stream in list(streams):
            item = next(stream, None)
            if item is None:
                streams.remove(stream)
            else:
                yield item


def _choice_chunks(index: int, completion: Completion) -> Iterator[dict[str, Any]]:
    for delta, logprobs in _deltas(completion):
        yield {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}
    yield {"index": index, "delta": {}, "logprobs": None, "finish_reason": completion.finish_reason}


def _deltas(completion: Completion) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each delta, with the logprobs of the token it carries when they were asked for."""
    yield {"role": "assistant", "content": ""}, None
    for piece in completion.reasoning_pieces:
        yield {"reasoning_content": piece}, None
    logprobs = completion.content_logprobs
    for position, piece in enumerate(completion.content_pieces):
        entry = None if logprobs is None else {"content": [logprobs[position]], "refusal": None}
        yield {"content": piece}, entry
    for index, call in enumerate(completion.tool_calls):
        for delta in _tool_call_deltas(index, call):
            yield delta, None


def _tool_call_deltas(index: int, call: ToolCall) -> Iterator[dict[str, Any]]:
    """As OpenAI streams a call: id, type and name with empty arguments, then fragments."""
    function = {"name": call.name, "arguments": ""}
    head = {"index": index, "id": call.id, "type": "function", "function": function}
    yield {"tool_calls": [head]}
    for piece in call.argument_pieces:
        yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
