"""Invariants that hold even under `python -O` (a bare assert would vanish there)."""

from __future__ import annotations


class InvariantViolation(AssertionError):
    pass


def invariant(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)
