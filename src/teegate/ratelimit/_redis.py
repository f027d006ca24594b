"""Per-key limits shared by every worker and replica through Redis.

One Lua script makes each decision atomically (INCR + EXPIRE in one round
trip), so N replicas admit exactly the limit per window between them.

When Redis cannot be reached the limiter fails *open but bounded*: each
replica enforces limit / replicas locally, so the total stays near the limit
and never becomes unlimited. It tries Redis again after a short pause, and
says it is degraded (readiness, metrics, a log line) while it is. A replica that
falls back counts what Redis had already granted in the window: its local share is
of what is left, never added on top.

A burst is not an outage. Decisions wait their turn for one of the process's
connections (up to `queue_timeout_s`); one that waits longer is shed with 503,
and the limiter stays exact. Only a failure on the connection itself (refused,
timed out, a server error) degrades it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from teegate.errors import ServiceUnavailable, map_error
from teegate.ratelimit._limiter import WINDOW_S, Decision, LocalRateLimiter, window_of

T = TypeVar("T")

log = structlog.get_logger("teegate.ratelimit")

RETRY_AFTER_FAILURE_S = 1.0
REDIS_TIMEOUT_S = 0.25
REDIS_CONNECTIONS = 32
"""Connections per process. A burst of requests shares them (a decision takes one
round trip) instead of opening one connection each: a cold burst of a hundred
connects could outlast the timeout and degrade the limiter for nothing."""
KEY_TTL_S = WINDOW_S * 2
GRANTED_MAX_ENTRIES = 100_000
QUEUE_TIMEOUT_S = 2.0
"""How long a decision waits for a free connection before its request is shed (503)."""

DEGRADE_ON: Mapping[type[BaseException], Literal["degrade", "degrade_if_lasting"]] = {
    RedisError: "degrade",  # redis-py's own: connection refused or lost, a server error
    RedisTimeout: "degrade_if_lasting",  # one slow answer: a burst or a busy host, or a stall
    OSError: "degrade",  # a socket error redis-py did not wrap
    TimeoutError: "degrade_if_lasting",
}
"""Errors from Redis that switch the limiter to its bounded local limit for a while;
a timeout does only once timeouts have gone on for OUTAGE_AFTER_S with no answer in
between (before that its request is shed with 503). Any other error is a bug and propagates."""

OUTAGE_AFTER_S = 2.0
"""Timeouts mean an outage only once they have gone on this long without one answer in
between: under a burst a call times out while Redis answers the others, and that is
no outage."""

HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


RESERVE_SCRIPT = """
local counted = tonumber(redis.call('GET', KEYS[1]) or '0')
local tokens = tonumber(ARGV[1])
if counted + tokens > tonumber(ARGV[2]) then return {0, counted} end
counted = redis.call('INCRBY', KEYS[1], tokens)
if counted == tokens then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return {1, counted}
"""
"""All or nothing: the tokens are counted only if they all fit under the limit."""

CORRECT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local counted = redis.call('INCRBY', KEYS[1], ARGV[1])
if counted < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL') end
return counted
"""
"""A window already gone stays gone; a count never goes below zero."""


class RedisRateLimiter:
    def __init__(
        self,
        url: str,
        *,
        replicas: int,
        timeout_s: float = REDIS_TIMEOUT_S,
        connections: int = REDIS_CONNECTIONS,
        queue_timeout_s: float = QUEUE_TIMEOUT_S,
    ) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=timeout_s,  # never waited on: the slots below hand out connections
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._hit = self._redis.register_script(HIT_SCRIPT)
        self._reserve = self._redis.register_script(RESERVE_SCRIPT)
        self._correct = self._redis.register_script(CORRECT_SCRIPT)
        self._replicas = replicas
        self._local = LocalRateLimiter()
        self._retry_at = 0.0
        self._timing_out_since: float | None = None
        """When the current run of timeouts began (None: the last call was answered)."""
        self._slots = asyncio.Semaphore(connections)
        self._queue_timeout_s = queue_timeout_s
        self._granted: dict[str, tuple[int, int]] = {}
        """Per counter key: (window start, the count Redis last gave) in that window."""

    def __repr__(self) -> str:
        return f"RedisRateLimiter(replicas={self._replicas})"

    @property
    def degraded(self) -> bool:
        return self._retry_at > time.monotonic()

    async def hit(self, key_id: str, limit: int) -> Decision:
        if not self.degraded:
            try:
                return await self._with_slot(lambda: self._hit_redis(key_id, limit))
            except Exception as exc:
                self._degrade(exc)
        return await self._local.hit(key_id, self._local_share(f"rl:{key_id}", limit))

    async def reserve_tokens(self, key_id: str, tokens: int, limit: int) -> Decision:
        if not self.degraded:
            try:
                return await self._with_slot(lambda: self._reserve_redis(key_id, tokens, limit))
            except Exception as exc:
                self._degrade(exc)
        share = self._local_share(f"tpm:{key_id}", limit)
        return await self._local.reserve_tokens(key_id, tokens, share)

    async def _with_slot(self, decide: Callable[[], Awaitable[T]]) -> T:
        """One decision on one of the process's connections, after waiting its turn."""
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ServiceUnavailable(
                "The rate limiter is busy with a burst of requests; retry shortly."
            ) from None
        try:
            decided = await decide()
        finally:
            self._slots.release()
        self._timing_out_since = None
        return decided

    def _local_share(self, counter: str, limit: int) -> int:
        """This replica's part of what Redis has not granted yet in the current window."""
        window_start, granted = self._granted.get(counter, (0, 0))
        if window_start != window_of(time.time()) or granted == 0:
            return max(1, limit // self._replicas)
        return max(0, limit - granted) // self._replicas

    def _saw(self, counter: str, window_start: int, count: int) -> None:
        if len(self._granted) >= GRANTED_MAX_ENTRIES:
            self._granted = {k: v for k, v in self._granted.items() if v[0] == window_start}
        self._granted[counter] = (window_start, count)

    async def correct_tokens(self, key_id: str, window_start: int, delta: int) -> None:
        """Best effort: a correction lost to an outage leaves the window counting the
        reservation, which errs on the side of the limit."""
        await self._local.correct_tokens(key_id, window_start, delta)
        if not self.degraded:
            try:
                await self._with_slot(
                    lambda: self._correct(keys=[_tokens_key(key_id, window_start)], args=[delta])
                )
            except ServiceUnavailable:
                log.warning("ratelimit_correction_shed")
            except Exception as exc:
                self._degrade(exc)

    def _degrade(self, exc: Exception) -> None:
        verdict = map_error(type(exc), DEGRADE_ON)
        if verdict is None:
            raise exc
        now = time.monotonic()
        if verdict == "degrade_if_lasting":
            if self._timing_out_since is None:
                self._timing_out_since = now
            lasting = now - self._timing_out_since >= OUTAGE_AFTER_S
        else:
            lasting = True
        if not lasting:
            raise ServiceUnavailable(
                "The rate limiter did not answer in time; retry shortly."
            ) from exc
        self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_S
        log.warning("ratelimit_degraded", error=type(exc).__name__)

    async def _reserve_redis(self, key_id: str, tokens: int, limit: int) -> Decision:
        now_s = time.time()
        window_start = window_of(now_s)
        allowed, counted = await self._reserve(
            keys=[_tokens_key(key_id, window_start)], args=[tokens, limit, KEY_TTL_S]
        )
        self._saw(f"tpm:{key_id}", window_start, int(counted))
        return Decision.for_tokens(bool(allowed), int(counted), limit, now_s, window_start)

    async def _hit_redis(self, key_id: str, limit: int) -> Decision:
        now_s = time.time()
        window_start = window_of(now_s)
        count = int(await self._hit(keys=[f"teegate:rl:{key_id}:{window_start}"], args=[KEY_TTL_S]))
        self._saw(f"rl:{key_id}", window_start, min(count, limit))
        return Decision.in_window(count, limit, now_s, window_start)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _tokens_key(key_id: str, window_start: int) -> str:
    return f"teegate:tpm:{key_id}:{window_start}"
