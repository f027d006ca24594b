"""How hard the fuzzing suites push: modest in CI, as deep as asked for by hand.

`TEEGATE_FUZZ_EXAMPLES=N` runs every fuzzing test (`tests/test_fuzz_*.py`) with N
examples per test (and schemathesis' coverage phase on); without it each test
keeps to the small default its module chose, so the suite stays quick.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["DEEP", "examples", "fuzz_settings"]

_ASKED = os.environ.get("TEEGATE_FUZZ_EXAMPLES")
DEEP = _ASKED is not None
"""A deep run was asked for."""


def examples(default: int) -> int:
    """The examples per test: the default, or the deep run's number."""
    return int(_ASKED) if _ASKED else default


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings for a fuzzing test: no deadline (a loaded machine is not
    a failure), no example database (runs are reproducible from the seed)."""
    return settings(
        max_examples=examples(default_examples),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
