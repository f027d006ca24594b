"""Prompt token counting that never exceeds the prompt's UTF-8 bytes (plus overhead).

The gateway holds credit using prompt bytes as an upper bound on byte-level
BPE tokens; this count (a quarter of the bytes, rounded up, plus a small
per-message overhead) keeps the simulated upstream inside that bound, so
billing tests exercise the real arithmetic.
"""

from __future__ import annotations

from typing import Any

BYTES_PER_TOKEN = 4
PER_MESSAGE_OVERHEAD_TOKENS = 3


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Sum of ceil(text bytes / 4) + 3 over the messages."""
    return sum(
        -(-message_text_bytes(message) // BYTES_PER_TOKEN) + PER_MESSAGE_OVERHEAD_TOKENS
        for message in messages
    )


def message_text_bytes(message: dict[str, Any]) -> int:
    """UTF-8 bytes of a message's text parts and of its tool-call arguments."""
    return _content_bytes(message.get("content")) + _tool_call_bytes(message.get("tool_calls"))


def _content_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode())
    if not isinstance(content, list):
        return 0
    return sum(
        len(part["text"].encode())
        for part in content
        if isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    )


def _tool_call_bytes(tool_calls: Any) -> int:
    if not isinstance(tool_calls, list):
        return 0
    total = 0
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        total += len(arguments.encode()) if isinstance(arguments, str) else 0
    return total
