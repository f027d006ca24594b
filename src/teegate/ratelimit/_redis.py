"""Per-key limits shared by every worker and replica through Redis.

One Lua script makes each decision atomically (INCR + EXPIRE in one round
trip), so N replicas admit exactly the limit per window between them.

When Redis cannot be reached the limiter fails *open but bounded*: each
replica enforces limit / replicas locally, so the total stays near the limit
and never becomes unlimited. It tries Redis again after a short pause, and
says it is degraded (readiness, metrics, a log line) while it is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Literal

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from teegate.errors import map_error
from teegate.ratelimit._limiter import WINDOW_S, Decision, LocalRateLimiter, window_of

log = structlog.get_logger("teegate.ratelimit")

RETRY_AFTER_FAILURE_S = 1.0
REDIS_TIMEOUT_S = 0.25
REDIS_CONNECTIONS = 32
"""Connections per process. A burst of requests shares them (a decision takes one
round trip) instead of opening one connection each: a cold burst of a hundred
connects could outlast the timeout and degrade the limiter for nothing."""
KEY_TTL_S = WINDOW_S * 2

DEGRADE_ON: Mapping[type[BaseException], Literal["degrade"]] = {
    RedisError: "degrade",  # redis-py's own: connection, timeout, a full pool, a server error
    OSError: "degrade",  # a socket error redis-py did not wrap
}
"""Errors from Redis that switch the limiter to its bounded local limit for a while;
any other error is a bug and propagates."""

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
    def __init__(self, url: str, *, replicas: int, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_CONNECTIONS,
            timeout=timeout_s,  # waiting for a free connection is bounded too
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

    def __repr__(self) -> str:
        return f"RedisRateLimiter(replicas={self._replicas})"

    @property
    def degraded(self) -> bool:
        return self._retry_at > time.monotonic()

    async def hit(self, key_id: str, limit: int) -> Decision:
        if not self.degraded:
            try:
                return await self._hit_redis(key_id, limit)
            except Exception as exc:
                self._degrade(exc)
        return await self._local.hit(key_id, max(1, limit // self._replicas))

    async def reserve_tokens(self, key_id: str, tokens: int, limit: int) -> Decision:
        if not self.degraded:
            try:
                return await self._reserve_redis(key_id, tokens, limit)
            except Exception as exc:
                self._degrade(exc)
        return await self._local.reserve_tokens(key_id, tokens, max(1, limit // self._replicas))

    async def correct_tokens(self, key_id: str, window_start: int, delta: int) -> None:
        """Best effort: a correction lost to an outage leaves the window counting the
        reservation, which errs on the side of the limit."""
        await self._local.correct_tokens(key_id, window_start, delta)
        if not self.degraded:
            try:
                await self._correct(keys=[_tokens_key(key_id, window_start)], args=[delta])
            except Exception as exc:
                self._degrade(exc)

    def _degrade(self, exc: Exception) -> None:
        if map_error(type(exc), DEGRADE_ON) is None:
            raise exc
        self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_S
        log.warning("ratelimit_degraded", error=type(exc).__name__)

    async def _reserve_redis(self, key_id: str, tokens: int, limit: int) -> Decision:
        now_s = time.time()
        window_start = window_of(now_s)
        allowed, counted = await self._reserve(
            keys=[_tokens_key(key_id, window_start)], args=[tokens, limit, KEY_TTL_S]
        )
        return Decision.for_tokens(bool(allowed), int(counted), limit, now_s, window_start)

    async def _hit_redis(self, key_id: str, limit: int) -> Decision:
        now_s = time.time()
        window_start = window_of(now_s)
        count = int(await self._hit(keys=[f"teegate:rl:{key_id}:{window_start}"], args=[KEY_TTL_S]))
        return Decision.in_window(count, limit, now_s, window_start)

    async def aclose(self) -> None:
        await self._redis.aclose()


def _tokens_key(key_id: str, window_start: int) -> str:
    return f"teegate:tpm:{key_id}:{window_start}"
