"""billing's rules without a database: the estimate, the settlement rules and the
meter's hold/settle/void behaviour, through a small fake store behind the real Protocol."""

from __future__ import annotations

import asyncio
import inspect
from decimal import Decimal

import orjson
import pytest
from structlog.testing import capture_logs

from teegate.billing import (
    FALLBACK_BYTES_PER_TOKEN,
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    TOOL_OVERHEAD_TOKENS,
    Billing,
    Hold,
    HoldRequest,
    LedgerMeter,
    LedgerStore,
    Outcome,
    Rates,
    Usage,
    cost_nano,
    expired_settlement,
    fallback_completion_tokens,
    held_completion_tokens,
    prompt_upper_bound,
    settlement_for,
)
from teegate.errors import InsufficientBalance
from tests.support.ledger import MODEL, FakeStore

RATES = Rates(740_000_000, 3_237_500_000)


# the estimate ------------------------------------------------------------------------------


def test_prompt_bound_counts_utf8_bytes_and_overheads() -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "héllo 你好"}]}  # fmt: skip
    text_bytes = len(b"Be brief.") + len("héllo 你好".encode())
    assert text_bytes == 9 + 13
    assert prompt_upper_bound(body) == REQUEST_OVERHEAD_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + 22


def test_prompt_bound_counts_parts_names_tool_calls_and_tools() -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}  # fmt: skip
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    body = {
        "messages": [
            {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hi"}, image]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": tools,
    }
    expected = (
        REQUEST_OVERHEAD_TOKENS + 3 * MESSAGE_OVERHEAD_TOKENS
        + len(b"ann") + len(b"hi") + len(orjson.dumps(image))
        + len(orjson.dumps([call]))
        + len(b"call_1") + len(b"sunny")
        + TOOL_OVERHEAD_TOKENS + len(orjson.dumps(tools))
    )  # fmt: skip
    assert prompt_upper_bound(body) == expected


def test_prompt_bound_grows_with_every_byte_and_includes_a_json_schema() -> None:
    small = {"messages": [{"role": "user", "content": "a"}]}
    large = {"messages": [{"role": "user", "content": "ab"}]}
    assert prompt_upper_bound(large) == prompt_upper_bound(small) + 1
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with_schema = {**small, "response_format": schema}
    assert prompt_upper_bound(with_schema) == prompt_upper_bound(small) + len(orjson.dumps(schema))


def test_held_completion_covers_every_choice() -> None:
    assert held_completion_tokens(1024, 1) == 1024
    assert held_completion_tokens(1024, 3) == 3072


# settlement rules --------------------------------------------------------------------------


def a_hold(prompt: int = 100, completion: int = 200) -> Hold:
    return Hold(request_id="req_1", account_id=1, key_id="k", model=MODEL.id, stream=True,
                rates=RATES, prompt_tokens=prompt, completion_tokens=completion,
                amount_nano=cost_nano(prompt, completion, RATES), created_ms=1_000,
                expires_ms=2_000)  # fmt: skip


@pytest.mark.parametrize(
    ("output_bytes", "cap", "tokens"),
    [(0, 100, 0), (1, 100, 1), (2, 100, 1), (3, 100, 2), (199, 100, 100), (10**6, 100, 100)],
)
def test_fallback_tokens_are_half_the_bytes_rounded_up_within_the_hold(
    output_bytes: int, cap: int, tokens: int
) -> None:
    assert FALLBACK_BYTES_PER_TOKEN == 2
    assert fallback_completion_tokens(output_bytes, cap) == tokens


def test_fallback_never_bills_a_longer_completion_less() -> None:
    hold = a_hold(completion=10_000)
    costs = [
        settlement_for(hold, status="client_gone", usage=None, output_bytes=n, now_ms=5).cost_nano
        for n in range(0, 20_001, 7)
    ]
    assert costs == sorted(costs)
    assert costs[-1] == hold.amount_nano  # 20_000 bytes reach the held 10_000 tokens


def test_usage_wins_and_is_billed_exactly() -> None:
    s = settlement_for(a_hold(), status="ok", usage=Usage(40, 30), output_bytes=999, now_ms=5)
    assert (s.prompt_tokens, s.completion_tokens, s.settled_by, s.capped) == (
        40,
        30,
        "usage",
        False,
    )
    assert s.cost_nano == cost_nano(40, 30, RATES)
    assert s.hold_state == "posted"


def test_usage_above_the_hold_is_capped_at_the_hold() -> None:
    hold = a_hold(prompt=10, completion=10)
    s = settlement_for(hold, status="ok", usage=Usage(10, 5_000), output_bytes=0, now_ms=5)
    assert (s.cost_nano, s.capped, s.completion_tokens) == (hold.amount_nano, True, 5_000)


def test_no_usage_bills_the_prompt_estimate_and_the_streamed_bytes() -> None:
    hold = a_hold()
    s = settlement_for(hold, status="upstream_error", usage=None, output_bytes=51, now_ms=5)
    assert (s.prompt_tokens, s.completion_tokens, s.settled_by) == (100, 26, "fallback")
    assert s.cost_nano == cost_nano(100, 26, RATES)


def test_an_ok_answer_without_usage_or_text_still_bills_the_prompt() -> None:
    s = settlement_for(a_hold(), status="ok", usage=None, output_bytes=0, now_ms=5)
    assert (s.settled_by, s.prompt_tokens, s.completion_tokens) == ("fallback", 100, 0)
    assert s.cost_nano > 0


@pytest.mark.parametrize("status", ["upstream_error", "client_gone"])
def test_a_failure_that_delivered_nothing_is_void(status: str) -> None:
    s = settlement_for(a_hold(), status=status, usage=None, output_bytes=0, now_ms=5)
    assert (s.settled_by, s.cost_nano, s.hold_state) == ("void", 0, "voided")


def test_an_expired_hold_posts_in_full() -> None:
    hold = a_hold()
    s = expired_settlement(hold, 3_000)
    assert (s.cost_nano, s.settled_by, s.status, s.hold_state) == (
        hold.amount_nano,
        "expired-hold",
        "expired",
        "expired",
    )


# the meter ---------------------------------------------------------------------------------


def a_hold_request(request_id: str = "req_1", max_tokens: int = 100, n: int = 1) -> HoldRequest:
    body = {"model": MODEL.id, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens, "n": n, "stream": True}  # fmt: skip
    rates = Rates(MODEL.price.prompt, MODEL.price.completion)
    return HoldRequest(request_id, 7, "key_1", MODEL.id, rates, True, body, max_tokens, n)


def test_the_fake_conforms_to_the_protocol() -> None:
    """What mypy cannot see: the fake's coroutines take the protocol's parameter names
    (a caller may pass them by keyword)."""
    declared = dict(inspect.getmembers(LedgerStore, inspect.iscoroutinefunction))
    assert declared
    for name, method in declared.items():
        implemented = getattr(FakeStore, name)
        assert inspect.iscoroutinefunction(implemented), name
        assert inspect.signature(implemented).parameters.keys() == (
            inspect.signature(method).parameters.keys()
        ), name


async def test_a_hold_snapshots_the_marked_up_price_and_the_estimate() -> None:
    store = FakeStore(10**9)
    meter = LedgerMeter(store, hold_ttl_s=60, clock=lambda: 1_000)
    await meter.place(a_hold_request(max_tokens=100, n=2))
    [hold] = store.holds.values()
    prompt = REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS + 2
    assert (hold.rates, hold.prompt_tokens, hold.completion_tokens) == (RATES, prompt, 200)
    assert hold.amount_nano == cost_nano(prompt, 200, RATES)
    assert (hold.account_id, hold.key_id, hold.created_ms, hold.expires_ms) == (
        7,
        "key_1",
        1_000,
        61_000,
    )


async def test_a_hold_that_does_not_fit_is_402_with_amounts_in_usd() -> None:
    meter = LedgerMeter(FakeStore(1_000), hold_ttl_s=60)
    needed = meter.hold_for(a_hold_request()).amount_nano
    with pytest.raises(InsufficientBalance) as info:
        await meter.place(a_hold_request())
    assert info.value.status == 402 and info.value.code == "insufficient_balance"
    assert f"needs {Decimal(needed) / 10**9} USD" in info.value.message
    assert "but 0.000001 USD is available" in info.value.message


async def test_a_hold_settled_twice_posts_once() -> None:
    store = FakeStore(10**9)
    meter = LedgerMeter(store, hold_ttl_s=60)
    hold = await meter.place(a_hold_request())
    with capture_logs() as logs:
        await meter.settle(hold, Outcome("ok", Usage(5, 5)))
        await meter.settle(hold, Outcome("ok", Usage(5, 5)))
    assert len(store.settled) == 1 and store.settled[0].settled_by == "usage"
    assert [e["event"] for e in logs] == ["hold_already_resolved"]


async def test_a_caller_cancelled_while_holding_gets_its_hold_voided() -> None:
    store = FakeStore(10**9)
    store.gate = asyncio.Event()
    meter = LedgerMeter(store, hold_ttl_s=60)
    placing = asyncio.ensure_future(meter.place(a_hold_request()))
    await asyncio.sleep(0.01)
    placing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await placing
    store.gate.set()  # the placement, already submitted, completes after the caller left
    for _ in range(50):
        if store.settled:
            break
        await asyncio.sleep(0.01)
    [void] = store.settled
    assert (void.settled_by, void.cost_nano, void.status) == ("void", 0, "client_gone")
    assert store.holds == {} and store.balance_nano == 10**9


async def test_a_balance_read_waits_for_the_settlements_under_way() -> None:
    """An answer is settled after it is sent: a read right after it sees it charged."""
    store = FakeStore(10**9)
    store.settle_gate = asyncio.Event()
    billing = Billing(store, hold_ttl_s=60, reaper_interval_s=60)
    hold = await billing.meter.place(a_hold_request())
    settling = asyncio.ensure_future(billing.meter.settle(hold, Outcome("ok", Usage(5, 5))))
    await asyncio.sleep(0)
    reading = asyncio.ensure_future(billing.balance(7))
    await asyncio.sleep(0.01)
    assert not reading.done()
    store.settle_gate.set()
    balance = await reading
    assert settling.done()
    [settled] = store.settled
    assert (balance.balance_nano, balance.held_nano) == (10**9 - settled.cost_nano, 0)
