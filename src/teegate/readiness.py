"""What `/readyz` reports: each dependency the gateway needs to serve a request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Check = Callable[[], Awaitable[str | None]]


@dataclass(slots=True)
class Readiness:
    """Named checks; each returns None when ready, or why it is not."""

    checks: dict[str, Check] = field(default_factory=dict)

    async def report(self) -> dict[str, str]:
        results = {}
        for name, check in self.checks.items():
            try:
                problem = await check()
            except Exception as exc:
                problem = f"{type(exc).__name__}"
            results[name] = "ok" if problem is None else problem
        return results
