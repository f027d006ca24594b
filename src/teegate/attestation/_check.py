"""The record of what a verification checked, for the verdict and the client-facing report.

Every check that runs is recorded, passed or failed, in order; a failed check raises
`AttestationFailed` at once, so the first failure is also the verdict's reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NoReturn

from teegate.errors import AttestationFailed, map_error

__all__ = ["FAIL_CLOSED", "Check", "CheckLog"]  # rejects(), summarize(): for sibling modules

_MAX_REASON_CHARS = 300

FAIL_CLOSED: Mapping[type[BaseException], Literal["reject", "raise"]] = {
    BaseException: "reject",  # pyo3's PanicException (a Rust panic in dcap-qvl) is one
    Exception: "reject",  # dcap-qvl raises ValueError; PyJWT's and cryptography's errors too
    KeyboardInterrupt: "raise",
    SystemExit: "raise",
    GeneratorExit: "raise",
    asyncio.CancelledError: "raise",  # the refresh is cancelled, the evidence is not refused
}
"""What an error from a verifying dependency (dcap-qvl, PyJWT, cryptography) means:
evidence that makes a verifier fail is refused, never trusted; only the
interpreter's own signals go on. Each call site names the check it fails."""


@dataclass(frozen=True, slots=True)
class Check:
    """One check: a stable `name` (as in `AttestationFailed.check`), its outcome, a detail."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


class CheckLog:
    """Checks in the order they ran. The caller keeps it, so a failure still shows the rest."""

    def __init__(self) -> None:
        self._checks: list[Check] = []

    def __repr__(self) -> str:
        return f"CheckLog({[c.name for c in self._checks]})"

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(self._checks)

    def passed(self, name: str, detail: str = "") -> None:
        self._checks.append(Check(name, True, detail))

    def fail(self, name: str, reason: str) -> NoReturn:
        self._checks.append(Check(name, False, reason))
        raise AttestationFailed(name, reason)

    def require(self, ok: bool, name: str, *, passed: str, failed: str) -> None:
        """Record `name` as passed with detail `passed`, or fail it with reason `failed`."""
        if not ok:
            self.fail(name, failed)
        self.passed(name, passed)

    def record(self, failure: AttestationFailed) -> None:
        """Record a failure raised elsewhere (e.g. by an adapter) unless already recorded."""
        last = self._checks[-1] if self._checks else None
        if last is None or last.ok or last.name != failure.check:
            self._checks.append(Check(failure.check, False, failure.reason))


def rejects(exc: BaseException) -> bool:
    """Whether `exc` refuses the evidence (by FAIL_CLOSED) rather than propagating."""
    return map_error(type(exc), FAIL_CLOSED) == "reject"


def summarize(exc: BaseException) -> str:
    """A one-line, bounded description of a dependency's error, for a check's reason."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:_MAX_REASON_CHARS]
