"""embeddings: the request's validation, its token bound (the hold) and its limits."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from teegate.billing import EMBEDDING_INPUT_OVERHEAD_TOKENS, embedding_input_bound
from teegate.embeddings import (
    MAX_INPUTS,
    MAX_STRING_BYTES_PER_TOKEN,
    MAX_TOTAL_TOKENS,
    check_against_model,
    parse_embeddings_request,
)
from teegate.errors import InvalidRequest
from tests.support.factories import catalog_model

MODEL = catalog_model("e-TEE", modality="embeddings")  # context 8192
OVERHEAD = EMBEDDING_INPUT_OVERHEAD_TOKENS


def parse(**fields: Any) -> Any:
    return parse_embeddings_request(orjson.dumps({"model": "e-TEE", **fields}))


@pytest.mark.parametrize(
    ("value", "bound"),
    [
        ("héllo", 6 + OVERHEAD),  # UTF-8 bytes, not characters
        (["ab", "cde"], 2 + 3 + 2 * OVERHEAD),
        ([1, 2, 3], 3 + OVERHEAD),  # a token array counts exactly
        ([[1, 2], [3, 4, 5, 6]], 6 + 2 * OVERHEAD),
    ],
)
def test_the_hold_bound_per_input_form(value: Any, bound: int) -> None:
    request = parse(input=value, encoding_format="base64", dimensions=8, user="u")
    assert request.prompt_tokens == bound
    assert request.body["input"] == value  # forwarded as sent


def test_the_bound_is_the_billing_rule() -> None:
    assert embedding_input_bound("abc") == 3 + OVERHEAD
    assert embedding_input_bound([9] * 10) == 10 + OVERHEAD


@pytest.mark.parametrize(
    ("raw", "param", "code"),
    [
        (b"{nope", None, "invalid_json"),
        (b"[]", None, "invalid_json"),
        (b'{"input": "x"}', "model", "missing_required_parameter"),
        (b'{"model": "e-TEE"}', "input", "missing_required_parameter"),
        (b'{"model": "e-TEE", "input": 5}', "input", "invalid_type"),
        (b'{"model": "e-TEE", "input": [true]}', "input", "invalid_type"),
        (b'{"model": "e-TEE", "input": [1, true]}', "input", "invalid_type"),
        (b'{"model": "e-TEE", "input": [1.5]}', "input", "invalid_type"),
        (b'{"model": "e-TEE", "input": [[]]}', "input[0]", "missing_required_parameter"),
        (b'{"model": "e-TEE", "input": [[1], "x"]}', "input[1]", "invalid_type"),
        (b'{"model": "e-TEE", "input": ["x", ""]}', "input[1]", "invalid_value"),
        (b'{"model": "e-TEE", "input": "x", "dimensions": true}', "dimensions", "invalid_value"),
        (b'{"model": "e-TEE", "input": "x", "encoding_format": 1}', "encoding_format", None),
    ],
)
def test_bad_requests_name_their_param(raw: bytes, param: str | None, code: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_embeddings_request(raw)
    assert info.value.param == param
    if code is not None:
        assert info.value.error_code == code


def test_input_count_is_limited() -> None:
    assert len(parse(input=["x"] * MAX_INPUTS).body["input"]) == MAX_INPUTS
    with pytest.raises(InvalidRequest, match=f"maximum length {MAX_INPUTS}"):
        parse(input=["x"] * (MAX_INPUTS + 1))


def test_total_tokens_are_limited() -> None:
    per_input = MAX_TOTAL_TOKENS // 4 - OVERHEAD
    assert parse(input=[[0] * per_input] * 4).prompt_tokens == MAX_TOTAL_TOKENS
    with pytest.raises(InvalidRequest) as info:
        parse(input=[[0] * (per_input + 1)] * 4)
    assert (info.value.param, info.value.error_code) == ("input", "max_tokens_per_request")


def test_each_input_must_fit_the_models_context() -> None:
    check_against_model(parse(input=[[0] * 8192]), MODEL)
    check_against_model(parse(input=["x" * 8192 * MAX_STRING_BYTES_PER_TOKEN]), MODEL)
    with pytest.raises(InvalidRequest) as tokens:
        check_against_model(parse(input=[[0], [0] * 8193]), MODEL)
    assert (tokens.value.param, tokens.value.error_code) == ("input[1]", "context_length_exceeded")
    too_long = "y" * (8192 * MAX_STRING_BYTES_PER_TOKEN + 1)
    with pytest.raises(InvalidRequest) as text:
        check_against_model(parse(input=["x", "z", too_long]), MODEL)
    assert text.value.param == "input[2]"
    assert "y" * 16 not in text.value.message  # the input itself is never quoted
