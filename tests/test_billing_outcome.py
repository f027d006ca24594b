"""billing's Outcome: what a completion delivered, as its settlement counts it."""

from __future__ import annotations

from typing import Any

import pytest

from teegate.billing import Outcome, Usage, read_usage


def chunk(delta: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": None}
    result: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "choices": [choice]}
    result.update(fields)
    return result


def usage_only(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}, Usage(3, 5)),
        ({"prompt_tokens": 0, "completion_tokens": 0}, Usage(0, 0)),
        (None, None),
        ("3,5", None),
        ([3, 5], None),
        ({"prompt_tokens": 3}, None),
        ({"completion_tokens": 5}, None),
        ({"prompt_tokens": "3", "completion_tokens": 5}, None),
        ({"prompt_tokens": 3.0, "completion_tokens": 5}, None),
        ({"prompt_tokens": True, "completion_tokens": 5}, None),
        ({"prompt_tokens": 3, "completion_tokens": False}, None),
        ({"prompt_tokens": -1, "completion_tokens": 5}, None),
        ({"prompt_tokens": 3, "completion_tokens": -5}, None),
    ],
)
def test_read_usage(raw: object, expected: Usage | None) -> None:
    assert read_usage(raw) == expected


@pytest.mark.parametrize(
    ("delta", "size"),
    [
        ({"content": "hello"}, 5),
        ({"content": "héllo"}, 6),  # UTF-8 bytes, not characters
        ({"content": "日本"}, 6),
        ({"content": "🙂"}, 4),
        ({"reasoning_content": "think"}, 5),
        ({"reasoning": "ab"}, 2),
        ({"refusal": "no"}, 2),
        ({"role": "assistant", "content": ""}, 0),  # the role is not generated text
        ({"content": None}, 0),
        ({"content": 12345}, 0),
        (
            {
                "tool_calls": [
                    {"index": 0, "id": "call_1", "function": {"name": "get", "arguments": '{"a":'}},
                    {"index": 0, "function": {"arguments": "1}"}},
                ]
            },
            3 + 5 + 2,
        ),
        ({"tool_calls": [{"function": {"arguments": "ü"}}, "junk", {"function": None}]}, 2),
        (
            {
                "content": "a",
                "reasoning_content": "bb",
                "tool_calls": [{"function": {"name": "c"}}],
            },
            4,
        ),
    ],
)
def test_chunk_bytes(delta: dict[str, Any], size: int) -> None:
    outcome = Outcome()
    assert outcome.observe_chunk(chunk(delta)) is False
    assert outcome.output_bytes == size
    assert outcome.chunks == 1


def test_bytes_add_up_over_a_stream() -> None:
    outcome = Outcome()
    for piece in ["Hel", "lo, ", "wörld"]:
        outcome.observe_chunk(chunk({"content": piece}))
    assert outcome.output_bytes == len("Hello, wörld".encode())
    assert outcome.chunks == 3
    assert not outcome.finished
    assert outcome.usage is None


def test_all_choices_count() -> None:
    outcome = Outcome()
    outcome.observe_chunk(
        {
            "choices": [
                {"index": 0, "delta": {"content": "ab"}},
                {"index": 1, "delta": {"content": "cde"}},
                "not a choice",
                {"index": 2, "delta": "not a delta"},
            ]
        }
    )
    assert outcome.output_bytes == 5


def test_finish_reason_marks_finished() -> None:
    outcome = Outcome()
    outcome.observe_chunk(chunk({"content": "x"}))
    assert not outcome.finished
    last = chunk({})
    last["choices"][0]["finish_reason"] = "stop"
    outcome.observe_chunk(last)
    assert outcome.finished


def test_usage_only_chunk_is_detected() -> None:
    outcome = Outcome()
    assert outcome.observe_chunk(usage_only(10, 20)) is True
    assert outcome.usage == Usage(10, 20)
    assert outcome.output_bytes == 0


@pytest.mark.parametrize(
    ("candidate", "is_usage_only"),
    [
        ({"choices": [], "usage": None}, False),
        ({"choices": []}, False),
        ({"usage": {"prompt_tokens": 1, "completion_tokens": 2}}, True),  # no choices key
        ({"choices": None, "usage": {"prompt_tokens": 1, "completion_tokens": 2}}, True),
        ({"choices": [], "usage": {"prompt_tokens": "x", "completion_tokens": 2}}, False),
    ],
)
def test_usage_only_detection_edges(candidate: dict[str, Any], is_usage_only: bool) -> None:
    assert Outcome().observe_chunk(candidate) is is_usage_only


def test_usage_on_a_content_chunk_is_recorded_but_not_usage_only() -> None:
    outcome = Outcome()
    with_usage = chunk({"content": "hey"}, usage={"prompt_tokens": 4, "completion_tokens": 1})
    assert outcome.observe_chunk(with_usage) is False
    assert outcome.usage == Usage(4, 1)
    assert outcome.output_bytes == 3


def test_last_usage_wins_and_null_usage_does_not_erase_it() -> None:
    outcome = Outcome()
    outcome.observe_chunk(
        chunk({"content": "a"}, usage={"prompt_tokens": 5, "completion_tokens": 1})
    )
    outcome.observe_chunk(chunk({"content": "b"}, usage=None))
    assert outcome.usage == Usage(5, 1)
    outcome.observe_chunk(usage_only(5, 2))
    outcome.observe_chunk(usage_only(5, 9))
    assert outcome.usage == Usage(5, 9)
    outcome.observe_chunk(usage_only(-1, 3))  # unreadable: ignored
    assert outcome.usage == Usage(5, 9)
    assert outcome.chunks == 5


def test_observe_response() -> None:
    outcome = Outcome()
    outcome.observe_response(
        {
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Grüße"}},
                {
                    "index": 1,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                    },
                },
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        }
    )
    assert outcome.output_bytes == len("Grüße".encode()) + 1 + 2
    assert outcome.usage == Usage(9, 4)
    assert outcome.finished


@pytest.mark.parametrize(
    "response", [{}, {"choices": None, "usage": "n/a"}, {"choices": ["x"], "usage": {}}]
)
def test_observe_response_tolerates_missing_parts(response: dict[str, Any]) -> None:
    outcome = Outcome()
    outcome.observe_response(response)
    assert (outcome.usage, outcome.output_bytes, outcome.finished) == (None, 0, True)


@pytest.mark.parametrize(
    "malformed",
    [
        {"choices": 1},
        {"choices": [{"delta": {"tool_calls": 5}}]},
    ],
)
def test_malformed_chunk_shapes_are_ignored(malformed: dict[str, Any]) -> None:
    outcome = Outcome()
    outcome.observe_chunk(malformed)
    assert outcome.output_bytes == 0


def test_an_outcome_starts_with_the_client_gone_and_nothing_delivered() -> None:
    outcome = Outcome()
    assert outcome.status == "client_gone"
    assert (outcome.usage, outcome.output_bytes, outcome.chunks, outcome.finished) == (
        None,
        0,
        0,
        False,
    )


@pytest.mark.parametrize(
    ("response", "usage"),
    [
        ({"usage": {"prompt_tokens": 12, "total_tokens": 12}}, Usage(12, 0)),
        ({"usage": {"prompt_tokens": 12, "completion_tokens": 5}}, Usage(12, 0)),
        ({"usage": {"prompt_tokens": -1}}, None),
        ({"usage": {"prompt_tokens": True}}, None),
        ({"usage": None}, None),
        ({}, None),
    ],
)
def test_embeddings_are_billed_for_their_input_tokens_only(
    response: dict[str, Any], usage: Usage | None
) -> None:
    outcome = Outcome.of_embeddings(response)
    assert (outcome.status, outcome.usage, outcome.output_bytes) == ("ok", usage, 0)
    assert outcome.finished
