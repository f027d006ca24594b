"""What the simulated model answers: deterministic text, reasoning, tool calls and JSON.

The output is a pure function of the request (seeded from SHA-256 of the model
and the messages), so tests can compare two calls, and a stream and a
non-stream answer, piece for piece. Everything is cut into token-sized pieces
up front; `_render` shapes them as a body or as stream chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from teegate.devstack._jsongen import JSON_OBJECT_SCHEMA, generate_json
from teegate.devstack._request import ChatRequest, FunctionTool
from teegate.devstack._rng import DeterministicRng
from teegate.devstack._usage import prompt_tokens
from teegate.devstack._words import VOCABULARY

REASONING_TOKENS = 6
"""Thinking tokens a reasoning model emits before answering (at most half the budget)."""

JSON_PIECE_CHARS = 4
"""Characters per streamed piece of JSON, unless the token budget forces longer ones."""


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    argument_pieces: tuple[str, ...]

    @property
    def arguments(self) -> str:
        return "".join(self.argument_pieces)


@dataclass(frozen=True)
class Completion:
    """One answer, as token-sized pieces; each piece counts as one completion token."""

    reasoning_pieces: tuple[str, ...]
    content_pieces: tuple[str, ...]
    tool_call: ToolCall | None
    finish_reason: str
    prompt_tokens: int

    @property
    def reasoning(self) -> str | None:
        return "".join(self.reasoning_pieces) if self.reasoning_pieces else None

    @property
    def content(self) -> str | None:
        return None if self.tool_call else "".join(self.content_pieces)

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning_pieces)

    @property
    def completion_tokens(self) -> int:
        arguments = len(self.tool_call.argument_pieces) if self.tool_call else 0
        return len(self.reasoning_pieces) + len(self.content_pieces) + arguments


def generate_completion(request: ChatRequest, *, reasoning: bool, cap_tokens: int) -> Completion:
    """The answer to `request`, never longer than its max tokens or `cap_tokens`.

    The budget bounds reasoning plus answer together, as OpenAI's
    `max_completion_tokens` does, so the usage reported never exceeds what the
    gateway held credit for.
    """
    rng = _seeded(request)
    budget = min(request.max_tokens or cap_tokens, cap_tokens)
    thinking = _words(rng, min(REASONING_TOKENS, budget // 2) if reasoning else 0)
    completion = _answer(request, rng, budget - len(thinking), thinking, cap_tokens)
    if not 0 < completion.completion_tokens <= budget:
        raise RuntimeError(
            f"generated {completion.completion_tokens} tokens for a budget of {budget}"
        )
    return completion


def _answer(
    request: ChatRequest,
    rng: DeterministicRng,
    budget: int,
    thinking: tuple[str, ...],
    cap_tokens: int,
) -> Completion:
    prompt = prompt_tokens(request.messages)
    if request.tool is not None:
        call = _tool_call(request.tool, rng, budget)
        return Completion(thinking, (), call, "tool_calls", prompt)
    if request.output != "text":
        schema = request.output_schema or JSON_OBJECT_SCHEMA
        return Completion(thinking, _json_pieces(schema, rng, budget), None, "stop", prompt)
    truncated = request.max_tokens is not None and request.max_tokens < cap_tokens
    return Completion(
        thinking, _words(rng, budget), None, "length" if truncated else "stop", prompt
    )


def _seeded(request: ChatRequest) -> DeterministicRng:
    messages = orjson.dumps(request.messages, option=orjson.OPT_SORT_KEYS)
    return DeterministicRng.from_text(request.model.encode(), b"\n", messages)


def _words(rng: DeterministicRng, count: int) -> tuple[str, ...]:
    """`count` words, each one token; all but the first carry a leading space."""
    words = [rng.choice(VOCABULARY) for _ in range(count)]
    return tuple(word if index == 0 else " " + word for index, word in enumerate(words))


def _tool_call(tool: FunctionTool, rng: DeterministicRng, budget: int) -> ToolCall:
    call_id = "call_" + rng.hex(24)
    return ToolCall(call_id, tool.name, _json_pieces(tool.parameters, rng, budget))


def _json_pieces(schema: dict[str, Any], rng: DeterministicRng, budget: int) -> tuple[str, ...]:
    """Serialised JSON cut into at most `budget` pieces, so it stays whole and valid."""
    text = orjson.dumps(generate_json(schema, rng)).decode()
    size = max(JSON_PIECE_CHARS, -(-len(text) // budget))
    return tuple(text[start : start + size] for start in range(0, len(text), size))
