"""Per-key rate limiting behind one interface."""

from teegate.ratelimit._limiter import WINDOW_S, Decision, LocalRateLimiter, RateLimiter
from teegate.ratelimit._redis import DEGRADE_ON, RedisRateLimiter

__all__ = [
    "DEGRADE_ON",
    "WINDOW_S",
    "Decision",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
]
