"""The hold's estimate: an upper bound on what a request can cost before it runs.

Byte-level BPE tokenizers (every model teegate serves) never emit a token
shorter than one byte, so the UTF-8 bytes of the text a model reads bound its
prompt tokens from above. What the bytes do not cover, the chat template's
own tokens (role markers, turn separators, the tool preamble), is covered by
fixed overheads per request, per message and per tool.

A part that is not text is not read as its bytes: an image becomes as many tokens
as its resolution gives it (a URL of 30 bytes can be 16,000 tokens), so each image
part is held at IMAGE_PART_TOKENS, the most one image can become on the vision
models teegate's upstreams serve; any other non-text part (audio, a file) at its
JSON bytes plus that much again. Upstreams bill these tokens as prompt tokens, so
the hold prices them at the model's prompt price.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from teegate.billing._money import exact_int
from teegate.billing._pricing import Rates, cost_nano

REQUEST_OVERHEAD_TOKENS = 16
"""The template's start, the assistant turn it opens, and any default system text."""

MESSAGE_OVERHEAD_TOKENS = 8
"""Role markers and separators around each message."""

TOOL_OVERHEAD_TOKENS = 32
"""The framing a template wraps around each tool definition."""

EMBEDDING_INPUT_OVERHEAD_TOKENS = 2
"""The special tokens an embedding model wraps each input in ([CLS]/[SEP], BOS/EOS)."""

IMAGE_PART_TOKENS = 16_384
"""The most tokens one image can become: Qwen2.5-VL's default `max_pixels`
(12,845,056) over its 28x28-pixel tokens. Llama 3.2 Vision's four tiles come to
6,404 and GPT-4o's high detail to under 2,000, so this bounds them too."""

SKIPPED_MESSAGE_KEYS = frozenset({"role"})
"""Keys whose value is rendered as template tokens, already in MESSAGE_OVERHEAD_TOKENS."""


def prompt_upper_bound(body: Mapping[str, Any]) -> int:
    """Tokens the prompt can be at most: text bytes plus template overheads."""
    messages = body.get("messages") or ()
    total = REQUEST_OVERHEAD_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + _message_bytes(message)
    tools = body.get("tools") or ()
    if tools:
        total += TOOL_OVERHEAD_TOKENS * len(tools) + len(orjson.dumps(tools))
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        total += len(orjson.dumps(response_format))
    return total


def embedding_input_bound(item: str | list[int]) -> int:
    """Tokens one embedding input can be at most: a string's UTF-8 bytes, a token
    array's length exactly, plus the special tokens around either."""
    size = len(item.encode()) if isinstance(item, str) else len(item)
    return size + EMBEDDING_INPUT_OVERHEAD_TOKENS


def held_completion_tokens(max_output_tokens: int, choices: int) -> int:
    """Every choice may use the whole output budget."""
    exact_int(max_output_tokens, "max_output_tokens")
    exact_int(choices, "choices")
    return max_output_tokens * choices


def hold_amount_nano(prompt_tokens: int, completion_tokens: int, rates: Rates) -> int:
    """The hold is the cost rule applied to the estimate: no separate arithmetic to drift."""
    return cost_nano(prompt_tokens, completion_tokens, rates)


def _message_bytes(message: object) -> int:
    """UTF-8 bytes of what a message carries: text as is, structure (tool calls) as JSON."""
    if not isinstance(message, dict):
        return _value_bytes(message)
    total = 0
    for key, value in message.items():
        if key in SKIPPED_MESSAGE_KEYS:
            continue
        if key == "content" and isinstance(value, list):
            total += sum(_part_bytes(part) for part in value)
        else:
            total += _value_bytes(value)
    return total


def _part_bytes(part: object) -> int:
    """A text part is read as its text; an image as the most tokens an image can be;
    any other part as its JSON and an image's worth besides (see the module's doc)."""
    if isinstance(part, dict):
        kind = part.get("type")
        for text_kind in ("text", "refusal"):
            if kind == text_kind and isinstance(part.get(text_kind), str):
                return len(part[text_kind].encode())
        if kind == "image_url":
            return IMAGE_PART_TOKENS
    return _value_bytes(part) + IMAGE_PART_TOKENS


def _value_bytes(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode())
    return len(orjson.dumps(value))
