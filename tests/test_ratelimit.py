"""ratelimit/_limiter.py: fixed one-minute windows, exact counts and headers."""

from __future__ import annotations

import pytest

from teegate.ratelimit import WINDOW_S, Decision, LocalRateLimiter, RateLimiter

WINDOW_START = 1_700_000_040  # a multiple of WINDOW_S (60)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_window_is_one_minute() -> None:
    assert WINDOW_S == 60


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (WINDOW_START, WINDOW_START),
        (WINDOW_START + 0.999, WINDOW_START),
        (WINDOW_START + 59.999, WINDOW_START),
        (WINDOW_START + 60, WINDOW_START + 60),
        (WINDOW_START - 0.001, WINDOW_START - 60),
    ],
)
def test_the_window_is_the_aligned_minute_now_falls_in(now: float, start: int) -> None:
    assert LocalRateLimiter().hit_now("key_a", 1, now).reset_epoch_s == start + WINDOW_S


@pytest.mark.parametrize("limit", [1, 2, 5, 60])
def test_exactly_limit_requests_per_window(limit: int) -> None:
    limiter = LocalRateLimiter()
    decisions = [limiter.hit_now("key_a", limit, WINDOW_START + i % 60) for i in range(limit + 3)]
    assert [d.allowed for d in decisions] == [True] * limit + [False] * 3
    assert [d.remaining for d in decisions] == [*range(limit - 1, -1, -1), 0, 0, 0]
    assert {d.limit for d in decisions} == {limit}
    assert {d.reset_epoch_s for d in decisions} == {WINDOW_START + WINDOW_S}


@pytest.mark.parametrize("offset", [0, 1, 30.5, 59, 59.99])
def test_reset_is_the_window_end(offset: float) -> None:
    decision = LocalRateLimiter().hit_now("key_a", 10, WINDOW_START + offset)
    assert decision.reset_epoch_s == WINDOW_START + 60


def test_a_new_window_resets_the_count() -> None:
    limiter = LocalRateLimiter()
    assert limiter.hit_now("key_a", 2, WINDOW_START).allowed
    assert limiter.hit_now("key_a", 2, WINDOW_START + 1).allowed
    assert not limiter.hit_now("key_a", 2, WINDOW_START + 59.9).allowed
    fresh = limiter.hit_now("key_a", 2, WINDOW_START + 60)
    assert fresh == Decision(True, 2, 1, WINDOW_START + 120, 60)


def test_keys_are_counted_apart() -> None:
    limiter = LocalRateLimiter()
    assert limiter.hit_now("key_a", 1, WINDOW_START).allowed
    assert not limiter.hit_now("key_a", 1, WINDOW_START).allowed
    other = limiter.hit_now("key_b", 3, WINDOW_START)
    assert (other.allowed, other.remaining, other.limit) == (True, 2, 3)


def test_refused_hits_do_not_count() -> None:
    """A refused request uses nothing: raising the limit admits exactly the difference."""
    limiter = LocalRateLimiter()
    for _ in range(5):
        limiter.hit_now("key_a", 2, WINDOW_START)
    assert limiter.hit_now("key_a", 3, WINDOW_START).allowed
    assert not limiter.hit_now("key_a", 3, WINDOW_START).allowed


def test_headers() -> None:
    decision = LocalRateLimiter().hit_now("key_a", 100, WINDOW_START + 15.7)
    assert decision.headers() == {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "99",
        "X-RateLimit-Reset": str(WINDOW_START + 60),
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-reset-requests": "45s",
    }


def test_headers_when_refused() -> None:
    limiter = LocalRateLimiter()
    limiter.hit_now("key_a", 1, WINDOW_START)
    refused = limiter.hit_now("key_a", 1, WINDOW_START + 50)
    assert not refused.allowed
    headers = refused.headers()
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Reset"] == str(WINDOW_START + 60)
    assert refused.retry_after_s == 10


@pytest.mark.parametrize(
    ("offset", "retry_after"),
    [(0, 60), (0.5, 60), (15.5, 45), (59, 1), (59.9, 1), (59.999, 1)],
)
def test_retry_after_rounds_up_and_is_at_least_one_second(offset: float, retry_after: int) -> None:
    decision = Decision.in_window(2, 1, WINDOW_START + offset, WINDOW_START)
    assert decision.retry_after_s == retry_after
    assert decision.reset_epoch_s - (WINDOW_START + offset) <= decision.retry_after_s


@pytest.mark.parametrize(
    ("count", "allowed", "remaining"),
    [(1, True, 4), (4, True, 1), (5, True, 0), (6, False, 0), (60, False, 0)],
)
def test_decision_in_window(count: int, allowed: bool, remaining: int) -> None:
    decision = Decision.in_window(count, 5, WINDOW_START + 1, WINDOW_START)
    assert decision == Decision(allowed, 5, remaining, WINDOW_START + 60, 59)


async def test_hit_reads_the_injected_clock() -> None:
    clock = Clock(WINDOW_START + 61.2)
    limiter: RateLimiter = LocalRateLimiter(clock=clock)
    first = await limiter.hit("key_a", 1)
    second = await limiter.hit("key_a", 1)
    assert first == Decision(True, 1, 0, WINDOW_START + 120, 59)
    assert not second.allowed
    clock.now = WINDOW_START + 120
    assert (await limiter.hit("key_a", 1)).allowed
    assert limiter.degraded is False
    await limiter.aclose()


# tokens per minute ------------------------------------------------------------------


def test_tokens_are_reserved_all_or_nothing() -> None:
    limiter = LocalRateLimiter()
    now = 600.0
    first = limiter.reserve_tokens_now("k", 600, 1000, now)
    assert (first.allowed, first.limit, first.remaining) == (True, 1000, 400)
    refused = limiter.reserve_tokens_now("k", 401, 1000, now)
    assert (refused.allowed, refused.remaining) == (False, 400)  # nothing counted
    fits = limiter.reserve_tokens_now("k", 400, 1000, now)
    assert (fits.allowed, fits.remaining) == (True, 0)
    assert limiter.reserve_tokens_now("other", 1000, 1000, now).allowed


async def test_a_correction_returns_unused_tokens_to_their_window_only() -> None:
    limiter = LocalRateLimiter()
    now = 600.0
    reserved = limiter.reserve_tokens_now("k", 1000, 1000, now)
    assert reserved.window_start == 600
    await limiter.correct_tokens("k", reserved.window_start, -700)
    assert limiter.reserve_tokens_now("k", 700, 1000, now).allowed
    assert not limiter.reserve_tokens_now("k", 1, 1000, now).allowed
    await limiter.correct_tokens("k", reserved.window_start, -5000)  # never below zero
    assert limiter.reserve_tokens_now("k", 1000, 1000, now).remaining == 0
    await limiter.correct_tokens("k", 540, -1000)  # an older window: nothing to correct
    assert not limiter.reserve_tokens_now("k", 1, 1000, now).allowed
    assert limiter.reserve_tokens_now("k", 1000, 1000, now + 60).allowed  # a new window


def test_token_headers_as_openai_sends_them() -> None:
    decision = LocalRateLimiter().reserve_tokens_now("k", 250, 1000, 659.5)
    assert decision.token_headers() == {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "750",
        "x-ratelimit-reset-tokens": "1s",
    }
