"""Money is an integer count of nano-USD (1e-9 USD), never a float.

Prices are nano-USD per million tokens; 1e-9 USD per 1M tokens is a resolution
no provider's price list comes near, so marked-up prices stay exact.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from teegate.errors import MoneyError

NANO_PER_USD = 10**9
TOKENS_PER_PRICE_UNIT = 10**6


def exact_int(value: object, what: str) -> int:
    """Amounts and token counts are exact integers: a float (or a bool) here is a bug.

    Every function on the money path checks its inputs with this, so a float
    that slips in anywhere fails loudly instead of rounding silently.
    """
    if type(value) is not int:
        raise MoneyError(f"{what} must be an int, not {type(value).__name__}")
    return value


def usd_to_nano(amount: Decimal | str | int) -> int:
    """An exact USD amount as nano-USD; more precision than 1e-9 USD is refused."""
    if isinstance(amount, float):
        raise MoneyError("money must not be a float")
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise MoneyError(f"not a decimal amount: {amount!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {amount!r}")
    nano = value * NANO_PER_USD
    if nano != nano.to_integral_value():
        raise MoneyError(f"{amount} USD is finer than 1e-9 USD")
    return int(nano)


def nano_to_usd(nano: int) -> str:
    """A decimal string for display and JSON: 1_850_000 -> "0.00185"."""
    exact_int(nano, "an amount in nano-USD")
    text = format(Decimal(nano).scaleb(-9), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def marked_up_price(upstream_usd_per_mtok: Decimal, markup: Decimal) -> int:
    """The catalog price in nano-USD per 1M tokens: upstream price x markup, half-up."""
    if isinstance(upstream_usd_per_mtok, float) or isinstance(markup, float):
        raise MoneyError("money must not be a float")
    exact = upstream_usd_per_mtok * markup * NANO_PER_USD
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
