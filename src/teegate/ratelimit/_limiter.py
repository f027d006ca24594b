"""Per-key request limits in fixed one-minute windows.

A fixed window makes the headers exact and cheap: `X-RateLimit-Reset` is the
window's end, and across replicas (Redis) the count is one atomic increment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_epoch_s: int
    retry_after_s: int

    @classmethod
    def in_window(cls, count: int, limit: int, now_s: float, window_start: int) -> Decision:
        """The decision for the `count`-th hit in the window starting at `window_start`."""
        reset = window_start + WINDOW_S
        return cls(
            count <= limit, limit, max(0, limit - count), reset, max(1, math.ceil(reset - now_s))
        )

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_epoch_s),
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{self.retry_after_s}s",
        }


class RateLimiter(Protocol):
    async def hit(self, key_id: str, limit: int) -> Decision: ...

    @property
    def degraded(self) -> bool:
        """True while the limiter cannot enforce the shared limit exactly."""
        ...

    async def aclose(self) -> None: ...


class LocalRateLimiter:
    """In-process counts: exact for one worker, which config enforces without Redis."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._window_start = 0
        self._counts: dict[str, int] = {}

    degraded = False

    async def hit(self, key_id: str, limit: int) -> Decision:
        return self.hit_now(key_id, limit, self._clock())

    async def aclose(self) -> None:
        return None

    def hit_now(self, key_id: str, limit: int, now_s: float) -> Decision:
        window_start = window_of(now_s)
        if window_start != self._window_start:
            self._window_start = window_start
            self._counts = {}
        count = self._counts.get(key_id, 0) + 1
        if count <= limit:
            self._counts[key_id] = count
        return Decision.in_window(count, limit, now_s, window_start)


def window_of(now_s: float) -> int:
    whole = int(now_s)
    return whole - whole % WINDOW_S
