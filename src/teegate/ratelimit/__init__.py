"""Per-key rate limiting behind one interface."""

from teegate.ratelimit._limiter import WINDOW_S, Decision, LocalRateLimiter, RateLimiter

__all__ = ["WINDOW_S", "Decision", "LocalRateLimiter", "RateLimiter"]
