"""Per-key rate limiting behind one interface."""

from teegate.ratelimit._limiter import WINDOW_S, Decision, LocalRateLimiter, RateLimiter
from teegate.ratelimit._redis import RETRY_AFTER_FAILURE_S, RedisRateLimiter

__all__ = [
    "RETRY_AFTER_FAILURE_S",
    "WINDOW_S",
    "Decision",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
]
