"""Log probabilities for the simulated model's tokens, shaped as OpenAI's.

Drawn from their own random source, so asking for them never changes the
text. Each token is the most likely at its position (rank 0 of its
`top_logprobs`, with the same logprob); the alternatives are other words of
the vocabulary, less likely in turn, and all the probabilities listed sum
to less than one, as they would for a real distribution.
"""

from __future__ import annotations

import math
from typing import Any

from teegate.devstack._rng import DeterministicRng
from teegate.devstack._words import VOCABULARY

WORDS: tuple[str, ...] = tuple(dict.fromkeys(VOCABULARY))
"""The vocabulary without repeats: alternatives at one position are distinct tokens."""


def token_logprobs(
    pieces: tuple[str, ...], rng: DeterministicRng, alternatives: int
) -> tuple[dict[str, Any], ...]:
    """One `ChatCompletionTokenLogprob` per piece, listing `alternatives` top tokens."""
    return tuple(_token_logprob(piece, rng, alternatives) for piece in pieces)


def _token_logprob(piece: str, rng: DeterministicRng, alternatives: int) -> dict[str, Any]:
    tokens = [piece, *_other_tokens(piece, rng, alternatives - 1)]
    top = [
        {"token": token, "logprob": math.log(probability), "bytes": list(token.encode())}
        for token, probability in zip(tokens, _probabilities(rng, len(tokens)), strict=True)
    ]
    return top[0] | {"top_logprobs": top[:alternatives]}


def _probabilities(rng: DeterministicRng, count: int) -> list[float]:
    """`count` probabilities in non-increasing order, summing to less than one.

    The first is in [0.5, 0.99); the j-th after it takes between a half and all of
    (1 - first) / 2**j, which is never more than the one before it.
    """
    first = 0.5 + rng.unit() * 0.49
    rest = 1.0 - first
    return [first] + [rest * (1 + rng.unit()) / 2 ** (j + 1) for j in range(1, count)]


def _other_tokens(piece: str, rng: DeterministicRng, count: int) -> list[str]:
    """`count` distinct vocabulary words other than `piece`, spaced as `piece` is."""
    lead = " " if piece.startswith(" ") else ""
    pool = [word for word in WORDS if lead + word != piece]
    for index in range(min(count, len(pool))):
        pick = index + rng.below(len(pool) - index)
        pool[index], pool[pick] = pool[pick], pool[index]
    return [lead + word for word in pool[:count]]
