"""Invariants that must hold whatever the input: a violation is a bug, never a user error.

A bare `assert` vanishes under `python -O`; money and attestation code cannot
afford that.
"""

from __future__ import annotations

from teegate.errors import InvariantViolation

__all__ = ["InvariantViolation", "invariant"]


def invariant(condition: bool, message: str) -> None:
    """Raise InvariantViolation unless `condition` holds; `message` names ids, never content."""
    if not condition:
        raise InvariantViolation(message)
