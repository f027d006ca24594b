"""Hypothesis suites on the three parsers untrusted bytes reach (issue 18,
deliverable 3): a client's request body, an upstream's SSE stream, an upstream's
TDX quote. Whatever the input, each answers or raises its own domain error, never
anything else. Examples per test: small by default, `TEEGATE_FUZZ_EXAMPLES=N` for a
deep run (tests/support/fuzzing.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from teegate.attestation import parse_td_quote
from teegate.chat import parse_chat_request, parse_json_object
from teegate.config import RequestDefaults
from teegate.embeddings import parse_embeddings_request
from teegate.errors import AttestationFailed, SSEError, TeegateError
from teegate.upstream import SSEDecoder
from tests.support.fuzzing import fuzz_settings

QUOTE = (Path(__file__).parent / "fixtures" / "tdx" / "tdx_quote").read_bytes()

# ---- request bodies --------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
FIELDS = [
    "model",
    "messages",
    "role",
    "content",
    "name",
    "tool_calls",
    "tool_call_id",
    "function",
    "arguments",
    "type",
    "text",
    "stream",
    "stream_options",
    "include_usage",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "json_schema",
    "logprobs",
    "top_logprobs",
    "input",
    "presence_penalty",
]
"""Keys the parsers look at: generated objects use them, so the checks behind each
are reached rather than refused at the first missing field."""
request_like = st.recursive(
    scalars | st.sampled_from(["user", "assistant", "tool", "function", "text", "json_schema"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS), inner),
    max_leaves=40,
)


def _body(value: Any) -> bytes:
    """As a client would send it: Python's encoder takes any int, and NaN/Infinity
    (which are not JSON: the parser must refuse them)."""
    return json.dumps(value).encode()


@fuzz_settings(100)
@given(request_like | json_values)
def test_a_chat_body_is_parsed_or_refused_with_an_api_error(value: Any) -> None:
    try:
        request = parse_chat_request(_body(value), RequestDefaults())
    except TeegateError as error:
        assert 400 <= error.status < 500
        orjson.loads(error.body())  # the envelope always serializes
        return
    orjson.dumps(request.body)  # what is accepted can be sent on
    assert request.max_output_tokens() >= 1
    assert request.choices() >= 1


@fuzz_settings(60)
@given(request_like | json_values)
def test_an_embeddings_body_is_parsed_or_refused_with_an_api_error(value: Any) -> None:
    try:
        request = parse_embeddings_request(_body(value))
    except TeegateError as error:
        assert 400 <= error.status < 500
        return
    orjson.dumps(request.body)


@fuzz_settings(100)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_a_json_object_or_an_invalid_json_error(raw: bytes) -> None:
    try:
        assert isinstance(parse_json_object(raw), dict)
    except TeegateError as error:
        assert error.status == 400


@fuzz_settings(15)
@given(st.integers(min_value=1, max_value=1100), st.sampled_from("[{"))
def test_any_nesting_depth_is_accepted_or_refused_never_a_crash(depth: int, kind: str) -> None:
    close = "]" if kind == "[" else "}"
    inner = (
        ("[" * depth + "1" + "]" * depth) if kind == "[" else '{"a":' * depth + "1" + close * depth
    )
    raw = f'{{"model": "m", "messages": [{{"role": "user", "content": "x"}}], "x": {inner}}}'
    try:
        request = parse_chat_request(raw.encode(), RequestDefaults())
    except TeegateError as error:
        assert error.status == 400
        return
    orjson.dumps(request.body)


# ---- SSE --------------------------------------------------------------------------

payloads = st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b)


def _stream(events: list[bytes], newline: bytes) -> bytes:
    return b"".join(b"data: " + e + newline + newline for e in events)


@fuzz_settings(100)
@given(
    st.lists(payloads, max_size=8),
    st.sampled_from([b"\n", b"\r\n"]),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_sse_events_do_not_depend_on_how_the_bytes_are_split(
    events: list[bytes], newline: bytes, cuts: list[int]
) -> None:
    stream = _stream(events, newline)
    whole = SSEDecoder()
    expected = whole.feed(stream) + whole.end()
    decoder = SSEDecoder()
    got: list[bytes] = []
    start = 0
    for cut in sorted({c % (len(stream) + 1) for c in cuts}):
        got += decoder.feed(stream[start:cut])
        start = cut
    got += decoder.feed(stream[start:]) + decoder.end()
    assert got == expected == events


@fuzz_settings(100)
@given(st.lists(st.binary(max_size=80), max_size=10), st.integers(min_value=8, max_value=64))
def test_garbage_sse_never_crashes_the_decoder(chunks: list[bytes], limit: int) -> None:
    decoder = SSEDecoder(max_event_bytes=limit)
    try:
        for chunk in chunks:
            for event in decoder.feed(chunk):
                assert len(event) <= limit + limit  # joined lines: bounded by the limit
        decoder.end()
    except SSEError:
        pass


# ---- TDX quotes -------------------------------------------------------------------


def _parse_quote(raw: bytes) -> None:
    try:
        quote = parse_td_quote(raw)
    except AttestationFailed as failure:
        assert failure.check in {"quote_format", "tee_type"}
        return
    assert quote.tee_type == 0x81
    assert len(quote.report_data) == 64


@fuzz_settings(100)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_a_quote_or_a_quote_format_failure(raw: bytes) -> None:
    _parse_quote(raw)


@fuzz_settings(100)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(QUOTE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
    st.integers(min_value=0, max_value=len(QUOTE)),
)
def test_a_mutated_or_truncated_quote_is_parsed_or_refused(
    flips: list[tuple[int, int]], keep: int
) -> None:
    mutated = bytearray(QUOTE)
    for at, value in flips:
        mutated[at] = value
    raw = bytes(mutated[:keep]) if keep else bytes(mutated)
    assume(raw != QUOTE)
    _parse_quote(raw)


@pytest.mark.parametrize("length", [0, 1, 47, 48, 631, 632])
def test_quote_prefixes_are_refused(length: int) -> None:
    with pytest.raises(AttestationFailed):
        parse_td_quote(QUOTE[:length])
