"""Per-key rate limiting behind one interface."""

from teegate.ratelimit._limiter import WINDOW_S, Decision, LocalRateLimiter, RateLimiter
from teegate.ratelimit._redis import RedisRateLimiter

__all__ = ["WINDOW_S", "Decision", "LocalRateLimiter", "RateLimiter", "RedisRateLimiter"]
