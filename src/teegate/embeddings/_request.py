"""An embeddings request, validated by hand as chat's is: every error names its
`param` the way OpenAI's API does, and nothing of the inputs goes into a message.

`input` is a string, an array of strings, a token array, or an array of token
arrays. Each input's token bound (`billing.embedding_input_bound`: a string's
UTF-8 bytes, a token array's exact length, plus special tokens) is summed here
once, for the limits and for the hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teegate.billing import embedding_input_bound
from teegate.catalog import CatalogModel
from teegate.chat import parse_json_object
from teegate.errors import InvalidRequest

MAX_INPUTS = 2048
"""Inputs per request, as OpenAI allows."""

MAX_TOTAL_TOKENS = 300_000
"""Token bound summed over a request's inputs, as OpenAI allows (its count is exact;
ours is the hold's upper bound, so a request of strings near it may be refused)."""

MAX_STRING_BYTES_PER_TOKEN = 4
"""A string input may be at most this many UTF-8 bytes per token of the model's
context: about its context in English text. Without the model's tokenizer no exact
count is possible; past this, the string is refused here rather than truncated or
refused upstream after a hold."""

ENCODING_FORMATS = frozenset({"float", "base64"})


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    model: str
    body: dict[str, Any]
    prompt_tokens: int
    """The inputs' token bound, summed: what the hold covers."""
    longest_tokens: tuple[int, int] = (0, 0)
    """(index, length) of the longest token array."""
    longest_text: tuple[int, int] = (0, 0)
    """(index, UTF-8 bytes) of the longest string."""


def parse_embeddings_request(raw: bytes) -> EmbeddingsRequest:
    body = parse_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _missing_or_invalid("model", model, "a model id string")
    inputs = _inputs(body.get("input"))
    _check_options(body)
    bound = 0
    longest_tokens = longest_text = (0, 0)
    for index, item in enumerate(inputs):
        bound += embedding_input_bound(item)
        if isinstance(item, str):
            size = len(item.encode())
            if size > longest_text[1]:
                longest_text = (index, size)
        elif len(item) > longest_tokens[1]:
            longest_tokens = (index, len(item))
    if bound > MAX_TOTAL_TOKENS:
        raise InvalidRequest(
            f"Invalid 'input': the inputs may hold up to {bound} tokens, more than the "
            f"{MAX_TOTAL_TOKENS} allowed per request. Send fewer or shorter inputs.",
            param="input",
            code="max_tokens_per_request",
        )
    return EmbeddingsRequest(model, body, bound, longest_tokens, longest_text)


def check_against_model(request: EmbeddingsRequest, model: CatalogModel) -> None:
    """Each input must fit the model's context: a token array exactly, a string by
    MAX_STRING_BYTES_PER_TOKEN. Called once the gate has admitted the model."""
    limit = model.context_length
    index, tokens = request.longest_tokens
    if tokens > limit:
        raise _too_long(index, f"{tokens} tokens", model, f"{limit} tokens")
    index, size = request.longest_text
    if size > limit * MAX_STRING_BYTES_PER_TOKEN:
        allowed = f"{limit * MAX_STRING_BYTES_PER_TOKEN} bytes of text ({limit} tokens)"
        raise _too_long(index, f"{size} bytes", model, allowed)


def _too_long(index: int, size: str, model: CatalogModel, allowed: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid 'input[{index}]': it is {size}, but '{model.id}' reads at most {allowed} "
        "per input.",
        param=f"input[{index}]",
        code="context_length_exceeded",
    )


def _inputs(value: object) -> list[str | list[int]]:
    """The inputs as a list of strings or of token arrays, each checked."""
    expected = "a string, an array of strings, a token array or an array of token arrays"
    if isinstance(value, str):
        return [_text(value, "input")]
    if not isinstance(value, list):
        raise _missing_or_invalid("input", value, expected)
    if not value:
        raise InvalidRequest(
            "'input' must contain at least one input.", param="input", code="empty_array"
        )
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(
            f"Invalid 'input': array too long. Expected an array with maximum length "
            f"{MAX_INPUTS}, but got an array with length {len(value)} instead.",
            param="input",
            code="array_above_max_length",
        )
    first = value[0]
    if isinstance(first, int) and not isinstance(first, bool):
        return [_tokens(value, "input")]
    if isinstance(first, str):
        return [_text(item, f"input[{i}]") for i, item in enumerate(value)]
    if isinstance(first, list):
        return [_tokens(item, f"input[{i}]") for i, item in enumerate(value)]
    raise _missing_or_invalid("input", value, expected)


def _text(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise _missing_or_invalid(param, value, "a string (inputs may not mix forms)")
    if not value:
        raise InvalidRequest(
            f"Invalid '{param}': an input may not be an empty string.",
            param=param,
            code="invalid_value",
        )
    return value


def _tokens(value: object, param: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise _missing_or_invalid(param, value or None, "a non-empty array of token ids")
    for token in value:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise InvalidRequest(
                f"Invalid '{param}': token ids must be non-negative integers.",
                param=param,
                code="invalid_type",
            )
    return value


def _check_options(body: dict[str, Any]) -> None:
    encoding = body.get("encoding_format")
    if encoding is not None and (not isinstance(encoding, str) or encoding not in ENCODING_FORMATS):
        raise InvalidRequest(
            "Invalid value for 'encoding_format': expected one of 'float', 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise InvalidRequest(
            "Invalid value for 'dimensions': expected a positive integer.",
            param="dimensions",
            code="invalid_value",
        )
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _missing_or_invalid("user", user, "a string")


def _missing_or_invalid(param: str, value: object, expected: str) -> InvalidRequest:
    if value is None:
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type"
    )
