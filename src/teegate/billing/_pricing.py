"""The cost rule: tokens x snapshotted price, rounded up to the next nano-USD.

    cost_nano = ceil((prompt_tokens x prompt_price + completion_tokens x completion_price)
                     / 1_000_000)

with prices in nano-USD per 1M tokens. Rounding up once, on the sum, means a
request that produced a token at a non-zero price never costs 0, and never
costs more than one nano-USD above the exact amount.
"""

from __future__ import annotations

from dataclasses import dataclass

from teegate.billing._money import TOKENS_PER_PRICE_UNIT, exact_int
from teegate.errors import MoneyError


@dataclass(frozen=True, slots=True)
class Rates:
    """Marked-up prices in nano-USD per 1M tokens, snapshotted when a request is admitted.

    The hold carries them, so a catalog change mid-request never reprices it.
    """

    prompt_nano_per_mtok: int
    completion_nano_per_mtok: int

    def __post_init__(self) -> None:
        for name in ("prompt_nano_per_mtok", "completion_nano_per_mtok"):
            if exact_int(getattr(self, name), name) < 0:
                raise MoneyError(f"{name} must not be negative")


def cost_nano(prompt_tokens: int, completion_tokens: int, rates: Rates) -> int:
    """What `prompt_tokens` in and `completion_tokens` out cost at `rates`, rounded up."""
    if exact_int(prompt_tokens, "prompt_tokens") < 0:
        raise MoneyError("prompt_tokens must not be negative")
    if exact_int(completion_tokens, "completion_tokens") < 0:
        raise MoneyError("completion_tokens must not be negative")
    exact = (
        prompt_tokens * rates.prompt_nano_per_mtok
        + completion_tokens * rates.completion_nano_per_mtok
    )
    return -(-exact // TOKENS_PER_PRICE_UNIT)
