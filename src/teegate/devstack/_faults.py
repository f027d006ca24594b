"""Fault injection: the named ways the simulated upstream misbehaves on purpose.

The gateway must survive every failure a real confidential upstream can show
(dropped streams, missing usage, garbage, hangs, lost TEE flags), so each one
is a named fault that tests and the demo switch on at start-up or at run time.
"""

from __future__ import annotations

from collections.abc import Iterable

DROP_MID_STREAM = "drop-mid-stream"
NO_USAGE = "no-usage"
SLOW_FIRST_TOKEN = "slow-first-token"  # noqa: S105 - a fault name, not a secret
HTTP_500 = "http-500"
GARBAGE_SSE = "garbage-sse"
HANG = "hang"
FLAG_OFF = "flag-off"

FAULTS: frozenset[str] = frozenset(
    {DROP_MID_STREAM, NO_USAGE, SLOW_FIRST_TOKEN, HTTP_500, GARBAGE_SSE, HANG, FLAG_OFF}
)
"""Every fault name; `flag-off` is only valid in its argument form `flag-off=MODEL`."""

_FLAG_OFF_PREFIX = FLAG_OFF + "="


class UnknownFaultError(ValueError):
    """A fault spec that names no fault, or misuses the `=MODEL` argument form."""


def check_fault(spec: str) -> str:
    """Return `spec` unchanged if it is a valid fault, else raise UnknownFaultError.

    Only `flag-off` takes an argument, and it needs one: a bare `flag-off` or a
    `hang=x` is a typo that would otherwise silently inject nothing.
    """
    if spec in FAULTS and spec != FLAG_OFF:
        return spec
    if spec.startswith(_FLAG_OFF_PREFIX) and len(spec) > len(_FLAG_OFF_PREFIX):
        return spec
    raise UnknownFaultError(f"unknown fault {spec!r}; known: {sorted(FAULTS)} (flag-off=MODEL)")


def check_faults(specs: Iterable[str]) -> frozenset[str]:
    """Validate every spec; all or nothing, so a bad list never half-applies."""
    return frozenset(check_fault(spec) for spec in specs)


class FaultState:
    """The faults active now, replaceable at run time and resettable to the initial set."""

    def __init__(self, initial: frozenset[str]) -> None:
        self._initial = check_faults(initial)
        self._active = self._initial

    @property
    def active(self) -> frozenset[str]:
        return self._active

    def is_on(self, name: str) -> bool:
        return name in self._active

    def replace(self, specs: Iterable[str]) -> None:
        self._active = check_faults(specs)

    def reset(self) -> None:
        self._active = self._initial

    def flagged_off_models(self) -> frozenset[str]:
        """Model ids whose catalog entry must report `confidential_compute: false`."""
        return frozenset(
            spec.removeprefix(_FLAG_OFF_PREFIX)
            for spec in self._active
            if spec.startswith(_FLAG_OFF_PREFIX)
        )
