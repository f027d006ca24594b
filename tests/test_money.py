"""billing/_money.py: nano-USD integers, exact conversions and marked-up prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from teegate.billing import (
    NANO_PER_USD,
    TOKENS_PER_PRICE_UNIT,
    MoneyError,
    marked_up_price,
    nano_to_usd,
    usd_to_nano,
)


def test_units() -> None:
    assert NANO_PER_USD == 1_000_000_000
    assert TOKENS_PER_PRICE_UNIT == 1_000_000


@pytest.mark.parametrize(
    ("amount", "nano"),
    [
        ("0", 0),
        ("1", 1_000_000_000),
        ("0.000000001", 1),
        ("1e-9", 1),
        ("0.00185", 1_850_000),
        ("100", 100_000_000_000),
        ("-2.5", -2_500_000_000),
        (Decimal("12.345678901"), 12_345_678_901),
        (3, 3_000_000_000),
        ("1000000", 10**15),
    ],
)
def test_usd_to_nano(amount: str | Decimal | int, nano: int) -> None:
    result = usd_to_nano(amount)
    assert result == nano
    assert type(result) is int


@pytest.mark.parametrize(
    "amount",
    [
        0.1,  # a float is refused outright, even one that looks harmless
        1.0,
        "0.0000000001",  # finer than 1e-9 USD
        "1.0000000005",
        "abc",
        "",
        "NaN",
        "Infinity",
        "-Infinity",
    ],
)
def test_usd_to_nano_refuses(amount: object) -> None:
    with pytest.raises(MoneyError):
        usd_to_nano(amount)  # type: ignore[arg-type]


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("nano", "text"),
    [
        (0, "0"),
        (1, "0.000000001"),
        (1_850_000, "0.00185"),
        (1_000_000_000, "1"),
        (10_000_000_000, "10"),
        (1_500_000_000, "1.5"),
        (462_500_000, "0.4625"),
        (-2_500_000_000, "-2.5"),
        (123_456_789_000_000_000, "123456789"),
    ],
)
def test_nano_to_usd(nano: int, text: str) -> None:
    assert nano_to_usd(nano) == text


@pytest.mark.parametrize(
    "text", ["0", "0.000000001", "0.00185", "1", "1.5", "99.999999999", "123456789.1"]
)
def test_round_trip(text: str) -> None:
    assert nano_to_usd(usd_to_nano(text)) == text


@pytest.mark.parametrize(
    ("upstream", "markup", "nano_per_mtok"),
    [
        (Decimal("0.25"), Decimal("1.85"), 462_500_000),
        (Decimal("1"), Decimal("1.85"), 1_850_000_000),
        (Decimal("2.19"), Decimal("1.85"), 4_051_500_000),
        (Decimal("0.1"), Decimal("1"), 100_000_000),
        (Decimal("0"), Decimal("1.85"), 0),
        (Decimal("3"), Decimal("1.1"), 3_300_000_000),
        # half-up at the nano-USD boundary (half-even would give 2 here)
        (Decimal("0.0000000025"), Decimal("1"), 3),
        (Decimal("0.0000000024"), Decimal("1"), 2),
        (Decimal("0.000000001"), Decimal("1.5"), 2),
    ],
)
def test_marked_up_price(upstream: Decimal, markup: Decimal, nano_per_mtok: int) -> None:
    result = marked_up_price(upstream, markup)
    assert result == nano_per_mtok
    assert type(result) is int


@pytest.mark.parametrize(
    ("upstream", "markup"),
    [(0.25, Decimal("1.85")), (Decimal("0.25"), 1.85), (0.25, 1.85)],
)
def test_marked_up_price_refuses_floats(upstream: object, markup: object) -> None:
    with pytest.raises(MoneyError, match="float"):
        marked_up_price(upstream, markup)  # type: ignore[arg-type]
