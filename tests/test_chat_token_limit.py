"""The chat service and a key's token limit: the reservation is made before the hold,
corrected to what was billed when the hold settles, and given back whole when
nothing can be billed (the hold refused, the upstream failing before it answered)."""

from __future__ import annotations

import dataclasses

import pytest

from teegate.apikeys import KeyPolicy
from teegate.billing import held_completion_tokens, prompt_upper_bound
from teegate.errors import InsufficientBalance, RateLimitExceeded, UpstreamError
from teegate.ratelimit import LocalRateLimiter
from tests.support.chat import (
    PRINCIPAL,
    Event,
    FakeUpstream,
    RecordingMeter,
    RecordingSink,
    a_request,
    chat_service,
)

NOW = 1_700_000_010.0


def reserved_by(stream: bool) -> int:
    request = a_request(stream=stream)
    return prompt_upper_bound(request.body) + held_completion_tokens(
        request.max_output_tokens(), request.choices()
    )


def remaining(limiter: LocalRateLimiter, tpm: int) -> int:
    return limiter.reserve_tokens_now(PRINCIPAL.key_id, 0, tpm, NOW).remaining


@pytest.mark.parametrize("stream", [False, True])
async def test_the_window_is_corrected_to_the_billed_tokens(stream: bool) -> None:
    events: list[Event] = []
    meter = RecordingMeter(events)
    service = chat_service(FakeUpstream(), meter)
    service.limiter = limiter = LocalRateLimiter(clock=lambda: NOW)
    tpm = 10 * reserved_by(stream)
    principal = dataclasses.replace(PRINCIPAL, policy=KeyPolicy(tpm=tpm))
    headers: dict[str, str] = {}
    answer = await service.answer(principal, a_request(stream=stream), "req_1", headers)
    assert headers["x-ratelimit-remaining-tokens"] == str(tpm - reserved_by(stream))
    assert remaining(limiter, tpm) == tpm - reserved_by(stream)
    await answer.send(RecordingSink(events))
    [record] = meter.store.usage_records.values()
    assert remaining(limiter, tpm) == tpm - record.prompt_tokens - record.completion_tokens


async def test_a_request_over_the_limit_is_refused_before_its_hold() -> None:
    meter = RecordingMeter([])
    service = chat_service(FakeUpstream(), meter)
    service.limiter = LocalRateLimiter(clock=lambda: NOW)
    tpm = reserved_by(False) - 1
    principal = dataclasses.replace(PRINCIPAL, policy=KeyPolicy(tpm=tpm))
    headers: dict[str, str] = {}
    with pytest.raises(RateLimitExceeded, match="tokens per minute") as info:
        await service.answer(principal, a_request(stream=False), "req_1", headers)
    assert info.value.headers()["Retry-After"] == "30"  # to the end of its minute
    assert headers["x-ratelimit-remaining-tokens"] == str(tpm)
    assert meter.placed == []


async def test_an_upstream_failure_gives_the_reservation_back() -> None:
    meter = RecordingMeter([])
    service = chat_service(FakeUpstream(error=UpstreamError("down")), meter)
    service.limiter = limiter = LocalRateLimiter(clock=lambda: NOW)
    tpm = reserved_by(False)
    principal = dataclasses.replace(PRINCIPAL, policy=KeyPolicy(tpm=tpm))
    with pytest.raises(UpstreamError):
        await service.answer(principal, a_request(stream=False), "req_1")
    assert len(meter.placed) == 1
    assert remaining(limiter, tpm) == tpm


async def test_a_refused_hold_gives_the_reservation_back() -> None:
    meter = RecordingMeter([])
    meter.store.accounts[7] = dataclasses.replace(meter.store.accounts[7], balance_nano=0)
    service = chat_service(FakeUpstream(), meter)
    service.limiter = limiter = LocalRateLimiter(clock=lambda: NOW)
    tpm = reserved_by(False)
    principal = dataclasses.replace(PRINCIPAL, policy=KeyPolicy(tpm=tpm))
    with pytest.raises(InsufficientBalance):
        await service.answer(principal, a_request(stream=False), "req_1")
    assert remaining(limiter, tpm) == tpm
