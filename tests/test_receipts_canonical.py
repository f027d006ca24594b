"""The canonical encoding every signature covers is RFC 8785's, byte for byte: the
fast path (orjson, sorted keys) against the `rfc8785` package on whatever JSON
hypothesis draws, control characters, non-ASCII text and integer limits included."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.receipts import (
    BATCH_HEAD_CONTEXT,
    RECEIPT_V1_CONTEXT,
    TREE_HEAD_CONTEXT,
    SigningKey,
    b64,
    canonical,
    verify_signature,
)

EXACT = 2**53 - 1
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-EXACT, max_value=EXACT)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(codec="utf-8"), max_size=6), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=120)
@given(st.dictionaries(st.text(max_size=8), values, max_size=6))
def test_canonical_is_rfc8785(value: dict[str, Any]) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\u20ac": 1, "\U0001f600": 2, "\ufb33": 3},  # UTF-16 order differs from code points
        {"a": 1.5, "b": 1e21, "c": -0.0},
        {"escapes": '\u0000\u001f\u007f\b\f\n\r\t"\\/\u2028'},
    ],
)
def test_what_the_fast_path_does_not_take_is_still_rfc8785(value: dict[str, Any]) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@settings(max_examples=60)
@given(st.dictionaries(st.text(max_size=8), values, max_size=6), values)
def test_a_part_encoded_once_is_spliced_in_unchanged(part: dict[str, Any], other: Any) -> None:
    """A verdict goes into every receipt as its leaf's bytes (an orjson.Fragment)."""
    whole = {"verdict": part, "other": other}
    spliced = {"verdict": orjson.Fragment(canonical(part)), "other": other}
    assert canonical(spliced) == canonical(whole) == rfc8785.dumps(whole)


def test_integers_beyond_ieee_doubles_are_refused() -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical({"nano": 2**53})


def test_a_signature_covers_every_field_and_only_its_context() -> None:
    key = SigningKey.generate(0)
    body = {"cost_nano_usd": 1234, "response_sha256": "ab" * 32}
    signature = key.sign(RECEIPT_V1_CONTEXT, body)["value"]
    assert verify_signature(key.public, RECEIPT_V1_CONTEXT, body, signature)
    assert verify_signature(key.public, RECEIPT_V1_CONTEXT, dict(reversed(body.items())), signature)
    assert not verify_signature(
        key.public, RECEIPT_V1_CONTEXT, body | {"cost_nano_usd": 1233}, signature
    )
    for other_context in (TREE_HEAD_CONTEXT, BATCH_HEAD_CONTEXT):
        assert not verify_signature(key.public, other_context, body, signature)
    other = SigningKey.generate(0)
    assert not verify_signature(other.public, RECEIPT_V1_CONTEXT, body, signature)
    assert not verify_signature(key.public, RECEIPT_V1_CONTEXT, body, b64(b"\0" * 64))
    assert SigningKey.from_raw(key.raw(), 0).id == key.id
