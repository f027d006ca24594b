"""Per-key rate limiting behind one interface; the Redis limiter is `teegate.ratelimit.redis`."""

from teegate.ratelimit._limiter import WINDOW_S, Decision, LocalRateLimiter, RateLimiter

__all__ = ["WINDOW_S", "Decision", "LocalRateLimiter", "RateLimiter"]
