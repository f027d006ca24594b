"""An upstream's 400 reaches the client with its reason, unless the reason repeats
any of the request's text (issue 18, finding 8)."""

from __future__ import annotations

from typing import Any

import pytest

from teegate.chat import upstream_refusal
from teegate.errors import UpstreamRejected

SECRET = "my bank password is hunter2-correct-horse"
BODY: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "user", "content": SECRET},
        {"role": "user", "content": [{"type": "text", "text": "second secret phrase here"}]},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "looks up stock"}}],
}


def rejected(message: str | None, param: str | None = None, code: str | None = None) -> Any:
    return upstream_refusal(
        UpstreamRejected(
            "The model's upstream refused the request.", detail=(message, param, code)
        ),
        BODY,
    )


def test_a_plain_reason_is_passed_on_with_its_param_and_code() -> None:
    error = rejected("'tool_choice' must be 'none', 'auto' or a function.", "tool_choice", "bad")
    assert error.status == 400
    assert error.type == "invalid_request_error"
    assert error.param == "tool_choice"
    assert error.error_code == "bad"
    assert "'tool_choice' must be" in error.message


@pytest.mark.parametrize(
    "reason",
    [
        f"Invalid input: {{'content': '{SECRET}'}}",
        "input was 'my bank password is hunter2-co...'",  # a truncated echo
        "part 'second secret phrase here' is invalid",
        "function description 'looks up stock' too vague",
    ],
)
def test_a_reason_that_repeats_request_text_is_withheld(reason: str) -> None:
    error = rejected(reason, "messages[0].content")
    assert error.param == "messages[0].content"
    for fragment in ("hunter2", "second secret", "looks up"):
        assert fragment not in error.message
    assert "not shown" in error.message


@pytest.mark.parametrize(
    ("param", "code"),
    [("tools[0]\nX", "ok"), ("x" * 200, "ok"), ("p", "Has Spaces"), ("p", "c" * 100)],
)
def test_odd_params_and_codes_are_dropped(param: str, code: str) -> None:
    error = rejected("bad", param, code)
    assert error.param in {None, "p"}
    assert error.error_code in {"upstream_rejected", "ok"}


def test_no_reason_at_all_is_the_generic_message() -> None:
    error = rejected(None)
    assert error.message == "The model's upstream refused the request."
    assert error.error_code == "upstream_rejected"
