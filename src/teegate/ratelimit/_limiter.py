"""Per-key request and token limits in fixed one-minute windows.

A fixed window makes the headers exact and cheap: `X-RateLimit-Reset` is the
window's end, and across replicas (Redis) the count is one atomic increment.

Tokens are reserved, not counted after the fact: a request reserves what its
hold reserves (its prompt bound plus its output ceiling) when it is admitted,
all or nothing, so concurrent requests can never together exceed the limit;
its settlement then corrects the window to the tokens it was billed for.
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

    @classmethod
    def for_tokens(
        cls, allowed: bool, counted: int, limit: int, now_s: float, window_start: int
    ) -> Decision:
        """A token reservation's decision; `counted` is the window's tokens after it
        (after nothing, if it was refused)."""
        reset = window_start + WINDOW_S
        return cls(allowed, limit, max(0, limit - counted), reset, max(1, math.ceil(reset - now_s)))

    @property
    def window_start(self) -> int:
        return self.reset_epoch_s - WINDOW_S

    def token_headers(self) -> dict[str, str]:
        """OpenAI's names for the token limit: limit, remaining, time to reset."""
        return {
            "x-ratelimit-limit-tokens": str(self.limit),
            "x-ratelimit-remaining-tokens": str(self.remaining),
            "x-ratelimit-reset-tokens": f"{self.retry_after_s}s",
        }

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

    async def reserve_tokens(self, key_id: str, tokens: int, limit: int) -> Decision:
        """Count `tokens` against the key's window if they all fit, else nothing."""
        ...

    async def correct_tokens(self, key_id: str, window_start: int, delta: int) -> None:
        """Add `delta` (negative: tokens reserved and not used) to that window, if it
        is still counted; never below zero."""
        ...

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
        self._tokens_window_start = 0
        self._tokens: dict[str, int] = {}

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

    async def reserve_tokens(self, key_id: str, tokens: int, limit: int) -> Decision:
        return self.reserve_tokens_now(key_id, tokens, limit, self._clock())

    def reserve_tokens_now(self, key_id: str, tokens: int, limit: int, now_s: float) -> Decision:
        window_start = window_of(now_s)
        if window_start != self._tokens_window_start:
            self._tokens_window_start = window_start
            self._tokens = {}
        counted = self._tokens.get(key_id, 0)
        allowed = counted + tokens <= limit
        if allowed:
            counted = self._tokens[key_id] = counted + tokens
        return Decision.for_tokens(allowed, counted, limit, now_s, window_start)

    async def correct_tokens(self, key_id: str, window_start: int, delta: int) -> None:
        if window_start == self._tokens_window_start and key_id in self._tokens:
            self._tokens[key_id] = max(0, self._tokens[key_id] + delta)


def window_of(now_s: float) -> int:
    whole = int(now_s)
    return whole - whole % WINDOW_S
