"""How a request ended and what it delivered, as its settlement needs it: the
upstream's usage if it sent one, and otherwise the bytes it streamed (settled
by the fallback rule)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "upstream_error", "client_gone", "refused"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the upstream reported them."""

    prompt_tokens: int
    completion_tokens: int


def read_usage(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    if isinstance(prompt, bool) or isinstance(completion, bool) or prompt < 0 or completion < 0:
        return None
    return Usage(prompt, completion)


@dataclass(slots=True)
class Outcome:
    """Filled in as the answer goes out, chunk by chunk or all at once, and read
    once by the settlement. Until a stream reaches [DONE] it ended with the client
    gone."""

    status: Status = "client_gone"
    usage: Usage | None = None
    output_bytes: int = 0
    chunks: int = 0
    finished: bool = False

    def observe_chunk(self, chunk: dict[str, Any]) -> bool:
        """Record one stream chunk; True if it is a usage-only chunk."""
        self.chunks += 1
        raw_usage = chunk.get("usage")
        usage = None if raw_usage is None else read_usage(raw_usage)
        if usage is not None:
            self.usage = usage  # the last usage wins: some upstreams repeat it
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return usage is not None
        for choice in choices:
            if isinstance(choice, dict):
                self.output_bytes += _text_bytes(choice.get("delta"))
                if choice.get("finish_reason"):
                    self.finished = True
        return False

    @classmethod
    def of_response(cls, response: dict[str, Any]) -> Outcome:
        """A whole chat completion, delivered as the upstream sent it."""
        outcome = cls("ok")
        outcome.observe_response(response)
        return outcome

    @classmethod
    def of_embeddings(cls, response: dict[str, Any]) -> Outcome:
        """Embeddings, delivered whole: their usage counts input tokens only."""
        usage = response.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        usage_read = read_usage({"prompt_tokens": prompt, "completion_tokens": 0})
        return cls("ok", usage=usage_read, finished=True)

    def observe_response(self, response: dict[str, Any]) -> None:
        self.usage = read_usage(response.get("usage"))
        choices = response.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                self.output_bytes += _text_bytes(choice.get("message"))
        self.finished = True


TEXT_FIELDS = frozenset({"content", "reasoning_content", "reasoning", "refusal"})


def _text_bytes(delta: object) -> int:
    """UTF-8 bytes of generated text: content, reasoning and tool-call arguments.
    One pass over the fields present (a chunk's delta has one or two)."""
    if not isinstance(delta, dict):
        return 0
    total = 0
    for key, value in delta.items():
        if key in TEXT_FIELDS:
            total += _utf8_len(value)
        elif key == "tool_calls" and isinstance(value, list):
            for call in value:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    total += _utf8_len(function.get("name")) + _utf8_len(function.get("arguments"))
    return total


def _utf8_len(value: object) -> int:
    if not isinstance(value, str):
        return 0
    return len(value) if value.isascii() else len(value.encode())
