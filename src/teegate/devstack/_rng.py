"""A deterministic random source: same seed, same numbers, on every Python version.

`random.Random` does not promise stable sequences across versions for every
method; SHA-256 in counter mode does, so recorded outputs stay valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_UNIT_SCALE = 2**53


class DeterministicRng:
    """Draws integers from SHA-256(seed || counter)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    @classmethod
    def from_text(cls, *parts: bytes) -> DeterministicRng:
        """Seed from the SHA-256 of the concatenated parts."""
        return cls(hashlib.sha256(b"".join(parts)).digest())

    def derive(self, label: bytes) -> DeterministicRng:
        """An independent source for one purpose, so drawing from it moves no other draw."""
        return DeterministicRng(hashlib.sha256(self._seed + b"/" + label).digest())

    def _draw(self) -> int:
        block = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
        self._counter += 1
        return int.from_bytes(block[:8], "big")

    def below(self, n: int) -> int:
        """An integer in [0, n); the modulo bias over 64 bits is irrelevant here."""
        if n < 1:
            raise ValueError("n must be >= 1")
        return self._draw() % n

    def unit(self) -> float:
        """A float in [0, 1)."""
        return (self._draw() >> 11) / _UNIT_SCALE

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def hex(self, length: int) -> str:
        return "".join(format(self.below(16), "x") for _ in range(length))
