"""Per-key request limits in fixed one-minute windows.

A fixed window makes the headers exact and cheap: `X-RateLimit-Reset` is the
window's end, and across replicas (Redis) the count is one atomic increment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_epoch_s: int

    @property
    def retry_after_s(self) -> int:
        return max(1, self.reset_epoch_s - int(time.time()))

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


class LocalRateLimiter:
    """In-process counts: exact for one worker, which config enforces without Redis."""

    def __init__(self) -> None:
        self._window_start = 0
        self._counts: dict[str, int] = {}

    async def hit(self, key_id: str, limit: int) -> Decision:
        return self.hit_now(key_id, limit, int(time.time()))

    def hit_now(self, key_id: str, limit: int, now_s: int) -> Decision:
        window_start = now_s - now_s % WINDOW_S
        if window_start != self._window_start:
            self._window_start = window_start
            self._counts = {}
        used = self._counts.get(key_id, 0)
        allowed = used < limit
        if allowed:
            used += 1
            self._counts[key_id] = used
        return Decision(allowed, limit, max(0, limit - used), window_start + WINDOW_S)
