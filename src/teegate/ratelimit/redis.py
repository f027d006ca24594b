"""The Redis-backed limiter: the rate limiter's storage edge, imported on its own so
that `import teegate.ratelimit` (the interface and the local limiter) loads no Redis client."""

from teegate.ratelimit._redis import (
    DEGRADE_ON,
    OUTAGE_AFTER_S,
    RETRY_AFTER_FAILURE_S,
    RedisRateLimiter,
)

__all__ = ["DEGRADE_ON", "OUTAGE_AFTER_S", "RETRY_AFTER_FAILURE_S", "RedisRateLimiter"]
