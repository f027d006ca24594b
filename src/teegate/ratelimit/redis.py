"""The Redis-backed limiter: the rate limiter's storage edge, imported on its own so
that `import teegate.ratelimit` (the interface and the local limiter) loads no Redis client."""

from teegate.ratelimit._redis import DEGRADE_ON, RedisRateLimiter

__all__ = ["DEGRADE_ON", "RedisRateLimiter"]
