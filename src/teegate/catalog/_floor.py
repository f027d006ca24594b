"""A key's attestation floor: what one key demands of a verdict on top of the
gateway's own acceptance policy.

The gateway's policy decides whether a verdict passes at all; a floor can only
narrow that (fewer TCB statuses, GPU evidence, some upstreams, reviewed
measurements, a younger verdict), never widen it: `looser_than` says where a
floor would, and keys are refused such a floor when they are made or changed.
Checking one is a read of the status the gate already holds, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from teegate.catalog._gate import AttestationStatus
from teegate.errors import PolicyError


@dataclass(frozen=True, slots=True)
class AttestationFloor:
    tcb: frozenset[str] | None = None
    """TCB statuses the key accepts (None: whatever the gateway accepts)."""
    require_gpu: bool = False
    upstreams: frozenset[str] | None = None
    measurements: Mapping[str, frozenset[str]] | None = field(default=None, hash=False)
    """Accepted values per measurement register; a register not listed is not restricted."""
    max_age_s: int | None = None
    """How old (since verification) a verdict may be for this key."""
    header: str = field(default="", compare=False)
    """The floor as `X-TEE-Attestation` echoes it: `; key_policy=...`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", f"; key_policy={self.describe()}")

    def unmet(self, upstream: str, status: AttestationStatus) -> str | None:
        """The first clause a passing status fails, as the client is told it."""
        if self.upstreams is not None and upstream not in self.upstreams:
            return f"upstream '{upstream}' is not in the key's upstreams {sorted(self.upstreams)}"
        if self.tcb is not None and status.tcb_status not in self.tcb:
            return (
                f"TCB status {status.tcb_status or 'unverified'} is not in the key's "
                f"accepted statuses {sorted(self.tcb)}"
            )
        if self.require_gpu and not status.gpu:
            return "the key requires GPU evidence and the verdict has none"
        if self.measurements is not None:
            off = _off_measurements(self.measurements, status.measurements)
            if off:
                return f"measurements {off} are not in the key's allowed sets"
        if self.max_age_s is not None:
            age = None if status.verified_at is None else int(time.time()) - status.verified_at
            if age is None or age > self.max_age_s:
                return f"the verdict is older than the key's maximum age of {self.max_age_s} s"
        return None

    def describe(self) -> str:
        clauses = []
        if self.tcb is not None:
            clauses.append("tcb:" + "/".join(sorted(self.tcb)))
        if self.require_gpu:
            clauses.append("gpu")
        if self.upstreams is not None:
            clauses.append("upstreams:" + "/".join(sorted(self.upstreams)))
        if self.measurements is not None:
            clauses.append("measurements:" + "/".join(sorted(self.measurements)))
        if self.max_age_s is not None:
            clauses.append(f"max_age_s:{self.max_age_s}")
        return ",".join(clauses) or "none"

    def looser_than(
        self,
        *,
        tcb: Iterable[str],
        upstreams: Iterable[str],
        measurements: Mapping[str, frozenset[str]] | None,
    ) -> list[str]:
        """Where this floor asks for something the gateway itself would refuse or
        does not have: each such clause, named."""
        problems = []
        if self.tcb is not None and not self.tcb <= frozenset(tcb):
            extra = sorted(self.tcb - frozenset(tcb))
            problems.append(f"TCB statuses {extra} are not accepted by the gateway")
        if self.upstreams is not None and not self.upstreams <= frozenset(upstreams):
            problems.append(f"upstreams {sorted(self.upstreams - frozenset(upstreams))} unknown")
        for register, values in (self.measurements or {}).items():
            allowed = (measurements or {}).get(register)
            if allowed is not None and not values <= allowed:
                problems.append(f"measurements.{register} has values the gateway does not allow")
        return problems

    def to_json(self) -> dict[str, Any]:
        return {
            "tcb": sorted(self.tcb) if self.tcb is not None else None,
            "require_gpu": self.require_gpu,
            "upstreams": sorted(self.upstreams) if self.upstreams is not None else None,
            "measurements": (
                {k: sorted(v) for k, v in sorted(self.measurements.items())}
                if self.measurements is not None
                else None
            ),
            "max_age_s": self.max_age_s,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> AttestationFloor:
        tcb, upstreams = document.get("tcb"), document.get("upstreams")
        measurements = document.get("measurements")
        max_age = document.get("max_age_s")
        if max_age is not None and (not isinstance(max_age, int) or max_age < 1):
            raise PolicyError("attestation.max_age_s must be a positive number of seconds")
        return cls(
            tcb=_names("attestation.tcb", tcb) if tcb is not None else None,
            require_gpu=bool(document.get("require_gpu", False)),
            upstreams=_names("attestation.upstreams", upstreams) if upstreams is not None else None,
            measurements=_registers(measurements) if measurements is not None else None,
            max_age_s=max_age,
        )


def _off_measurements(
    wanted: Mapping[str, frozenset[str]], measured: Mapping[str, str]
) -> list[str]:
    return [name for name, ok in sorted(wanted.items()) if measured.get(name, "").lower() not in ok]


def _names(what: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{what} must be a non-empty list of names")
    return frozenset(value)


def _registers(value: Any) -> dict[str, frozenset[str]]:
    if not isinstance(value, Mapping) or not value:
        raise PolicyError("attestation.measurements must be an object of register lists")
    return {
        str(k): frozenset(v.lower() for v in _names(f"attestation.measurements.{k}", vs))
        for k, vs in value.items()
    }
