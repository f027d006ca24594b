"""What the simulated model answers: deterministic text, reasoning, tool calls and JSON.

The output is a pure function of the request (seeded from SHA-256 of the model,
the messages and, when given, `seed` and the choice's index), so tests can
compare two calls, and a stream and a non-stream answer, piece for piece.
Everything is cut into token-sized pieces up front; `_render` shapes them as a
body or as stream chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import orjson

from teegate.devstack._jsongen import JSON_OBJECT_SCHEMA, generate_json
from teegate.devstack._logprobs import token_logprobs
from teegate.devstack._request import ChatRequest, FunctionTool
from teegate.devstack._rng import DeterministicRng
from teegate.devstack._usage import prompt_tokens
from teegate.devstack._words import VOCABULARY

REASONING_TOKENS = 6
"""Thinking tokens a reasoning model emits before answering (at most half the budget)."""

JSON_PIECE_CHARS = 4
"""Characters per streamed piece of JSON, unless the token budget forces longer ones."""

ECHO_PREFIX = "echo:"
"""A last user message starting with this is answered with the rest of its text,
verbatim (a piece per word), so a test can follow a canary through the gateway."""
_ECHO_PIECE = re.compile(r"\s*\S+\s*")


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
    """One answer (one choice), as token-sized pieces; each piece counts as one token.

    `unseen_tokens` were generated but are not returned: the stop sequence that
    ended the answer. `content_logprobs` has one entry per content piece when
    log probabilities were asked for, else None.
    """

    reasoning_pieces: tuple[str, ...]
    content_pieces: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    prompt_tokens: int
    unseen_tokens: int = 0
    content_logprobs: tuple[dict[str, Any], ...] | None = None

    @property
    def reasoning(self) -> str | None:
        return "".join(self.reasoning_pieces) if self.reasoning_pieces else None

    @property
    def content(self) -> str | None:
        return None if self.tool_calls else "".join(self.content_pieces)

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning_pieces)

    @property
    def completion_tokens(self) -> int:
        arguments = sum(len(call.argument_pieces) for call in self.tool_calls)
        shown = len(self.reasoning_pieces) + len(self.content_pieces) + arguments
        return shown + self.unseen_tokens


def generate_completions(
    request: ChatRequest, *, reasoning: bool, cap_tokens: int
) -> tuple[Completion, ...]:
    """The request's `n` answers, each from its own seed, so each says something else."""
    return tuple(
        generate_completion(request, reasoning=reasoning, cap_tokens=cap_tokens, choice=index)
        for index in range(request.n)
    )


def generate_completion(
    request: ChatRequest, *, reasoning: bool, cap_tokens: int, choice: int = 0
) -> Completion:
    """Answer `choice` to `request`, never longer than its max tokens or `cap_tokens`.

    The budget bounds reasoning plus answer together, as OpenAI's
    `max_completion_tokens` does, so the usage reported never exceeds what the
    gateway held credit for.
    """
    rng = _seeded(request, choice)
    budget = min(request.max_tokens or cap_tokens, cap_tokens)
    thinking = _words(rng, min(REASONING_TOKENS, budget // 2) if reasoning else 0)
    completion = _answer(request, rng, budget - len(thinking), thinking, cap_tokens)
    if not 0 < completion.completion_tokens <= budget:
        raise RuntimeError(
            f"generated {completion.completion_tokens} tokens for a budget of {budget}"
        )
    if request.logprobs is None:
        return completion
    logprobs = token_logprobs(completion.content_pieces, rng.derive(b"logprobs"), request.logprobs)
    return replace(completion, content_logprobs=logprobs)


def _answer(
    request: ChatRequest,
    rng: DeterministicRng,
    budget: int,
    thinking: tuple[str, ...],
    cap_tokens: int,
) -> Completion:
    prompt = prompt_tokens(request.messages)
    if request.tools:
        calls = _tool_calls(request.tools, rng, budget)
        return Completion(thinking, (), calls, "tool_calls", prompt)
    if request.output != "text":
        schema = request.output_schema or JSON_OBJECT_SCHEMA
        pieces, finish = _json_pieces(schema, rng, budget), "stop"
    elif (echoed := _echo(request.messages)) is not None:
        pieces = echoed[:budget]
        finish = "length" if len(echoed) > budget else "stop"
    else:
        truncated = request.max_tokens is not None and request.max_tokens < cap_tokens
        pieces, finish = _words(rng, budget), "length" if truncated else "stop"
    cut = _cut_at_stop(pieces, request.stop)
    if cut is None:
        return Completion(thinking, pieces, (), finish, prompt)
    shown, unseen = cut
    return Completion(thinking, shown, (), "stop", prompt, unseen)


def _echo(messages: list[dict[str, Any]]) -> tuple[str, ...] | None:
    """The pieces of an `echo:` prompt's text (the last message, if a user's string)."""
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if not isinstance(content, str) or not content.startswith(ECHO_PREFIX):
        return None
    text = content.removeprefix(ECHO_PREFIX).removeprefix(" ")
    return tuple(_ECHO_PIECE.findall(text)) or None


def _cut_at_stop(
    pieces: tuple[str, ...], stops: tuple[str, ...]
) -> tuple[tuple[str, ...], int] | None:
    """The pieces shown before the first stop sequence, and how many more were generated;
    None if no stop sequence occurs.

    Generation ends with the token that completes a stop sequence (the one
    whose occurrence ends first); the text is cut where that sequence starts,
    so the token holding its start is shown up to there. The tokens spent on
    the stop sequence are generated, so they count as usage, but never shown.
    """
    text = "".join(pieces)
    found = [(at + len(stop), at) for stop in stops if (at := text.find(stop)) >= 0]
    if not found:
        return None
    end, start = min(found)
    shown: list[str] = []
    offset = consumed = 0
    for piece in pieces:
        if offset >= end:
            break
        if offset < start:
            shown.append(piece[: start - offset])
        offset += len(piece)
        consumed += 1
    return tuple(shown), consumed - len(shown)


def _seeded(request: ChatRequest, choice: int) -> DeterministicRng:
    """Seeded by model and messages, then `seed` and the choice's index when they apply,
    so a request without them keeps its answer."""
    messages = orjson.dumps(request.messages, option=orjson.OPT_SORT_KEYS)
    parts = [request.model.encode(), b"\n", messages]
    if request.seed is not None:
        parts.append(b"\nseed=%d" % request.seed)
    if choice:
        parts.append(b"\nchoice=%d" % choice)
    return DeterministicRng.from_text(*parts)


def _words(rng: DeterministicRng, count: int) -> tuple[str, ...]:
    """`count` words, each one token; all but the first carry a leading space."""
    words = [rng.choice(VOCABULARY) for _ in range(count)]
    return tuple(word if index == 0 else " " + word for index, word in enumerate(words))


def _tool_calls(
    tools: tuple[FunctionTool, ...], rng: DeterministicRng, budget: int
) -> tuple[ToolCall, ...]:
    """One call per function, sharing the budget; as many as it allows, one token each."""
    called = tools[:budget]
    share = budget // len(called)
    return tuple(_tool_call(tool, rng, share) for tool in called)


def _tool_call(tool: FunctionTool, rng: DeterministicRng, budget: int) -> ToolCall:
    call_id = "call_" + rng.hex(24)
    return ToolCall(call_id, tool.name, _json_pieces(tool.parameters, rng, budget))


def _json_pieces(schema: dict[str, Any], rng: DeterministicRng, budget: int) -> tuple[str, ...]:
    """Serialised JSON cut into at most `budget` pieces, so it stays whole and valid."""
    text = orjson.dumps(generate_json(schema, rng)).decode()
    size = max(JSON_PIECE_CHARS, -(-len(text) // budget))
    return tuple(text[start : start + size] for start in range(0, len(text), size))
