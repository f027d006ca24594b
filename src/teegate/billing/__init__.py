"""Billing: exact money, prices and the two-phase ledger rules."""

from teegate.billing._money import (
    NANO_PER_USD,
    TOKENS_PER_PRICE_UNIT,
    MoneyError,
    marked_up_price,
    nano_to_usd,
    usd_to_nano,
)

__all__ = [
    "NANO_PER_USD",
    "TOKENS_PER_PRICE_UNIT",
    "MoneyError",
    "marked_up_price",
    "nano_to_usd",
    "usd_to_nano",
]
