"""billing's rules without a database: the estimate, the settlement rules and the
meter's hold/settle/void behaviour, through a small fake store behind the real Protocol."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from dataclasses import replace
from decimal import Decimal

import orjson
import pytest
from structlog.testing import capture_logs

from teegate.billing import (
    FALLBACK_BYTES_PER_TOKEN,
    IMAGE_PART_TOKENS,
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
    Settlement,
    Usage,
    cost_nano,
    expired_settlement,
    fallback_completion_tokens,
    held_completion_tokens,
    prompt_upper_bound,
    settlement_for,
)
from teegate.chat import Idempotency
from teegate.errors import (
    IdempotencyConflict,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvariantViolation,
    ServiceUnavailable,
)
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
        + len(b"ann") + len(b"hi") + IMAGE_PART_TOKENS
        + len(orjson.dumps([call]))
        + len(b"call_1") + len(b"sunny")
        + TOOL_OVERHEAD_TOKENS + len(orjson.dumps(tools))
    )  # fmt: skip
    assert prompt_upper_bound(body) == expected


def test_twenty_images_are_held_for_what_a_vision_model_counts_them() -> None:
    """Issue 18, finding 1: 20 image URLs and max_tokens 4 were held as their JSON bytes,
    and a vision upstream's ~1,100 tokens per image were billed at ~1/21 (capped)."""
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    body = {"messages": [{"role": "user", "content": [image] * 20}], "max_tokens": 4}
    prompt = prompt_upper_bound(body)
    assert prompt >= 20 * IMAGE_PART_TOKENS
    hold = Hold("r", 7, "k", "m", False, RATES, prompt, 4, cost_nano(prompt, 4, RATES), 1, 2)
    vision_usage = Usage(20 * 1_105 + 40, 4)  # GPT-4o high detail at 2048x768, 20 times
    settled = settlement_for(hold, status="ok", usage=vision_usage, output_bytes=8, now_ms=3)
    assert not settled.capped
    assert settled.cost_nano == cost_nano(vision_usage.prompt_tokens, 4, RATES)


def test_the_prompt_held_is_never_more_than_the_models_context() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    request = replace(
        a_hold_request(), body={"messages": [{"role": "user", "content": [image] * 20}]}
    )
    assert request.prompt_bound() > 20 * IMAGE_PART_TOKENS
    within = replace(request, prompt_limit=163_840)
    assert within.prompt_bound() == 163_840
    hold = LedgerMeter(FakeStore(0), hold_ttl_s=60).hold_for(within)
    assert hold.prompt_tokens == 163_840


def test_audio_and_file_parts_are_held_above_their_bytes_and_refusals_as_text() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGR" * 100, "format": "wav"}}
    refusal = {"type": "refusal", "refusal": "no"}
    base = prompt_upper_bound({"messages": [{"role": "assistant", "content": []}]})
    with_audio = prompt_upper_bound({"messages": [{"role": "user", "content": [audio]}]})
    assert with_audio == base + len(orjson.dumps(audio)) + IMAGE_PART_TOKENS
    with_refusal = prompt_upper_bound({"messages": [{"role": "assistant", "content": [refusal]}]})
    assert with_refusal == base + 2


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


def test_a_lapsed_lease_with_nothing_delivered_costs_nothing() -> None:
    """Issue 18, finding 2: after a SIGKILL, a stream that had delivered 0 bytes was
    charged its full hold. Nothing delivered is what the evidence shows: it costs 0."""
    hold = a_hold()
    s = expired_settlement(hold, 3_000)
    assert (s.cost_nano, s.settled_by, s.status, s.hold_state) == (
        0,
        "expired-hold",
        "expired",
        "expired",
    )


def test_a_lapsed_lease_is_charged_its_checkpoint_by_the_fallback_rule() -> None:
    hold = replace(a_hold(), output_bytes=41)
    s = expired_settlement(hold, 3_000)
    assert (s.prompt_tokens, s.completion_tokens) == (hold.prompt_tokens, 21)
    assert s.cost_nano == cost_nano(hold.prompt_tokens, 21, RATES) < hold.amount_nano
    long_one = replace(a_hold(), output_bytes=10**9)
    assert expired_settlement(long_one, 3_000).cost_nano == long_one.amount_nano


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
    meter = LedgerMeter(
        FakeStore(1_000), hold_ttl_s=60, top_up_url="https://gateway.example/billing"
    )
    needed = meter.hold_for(a_hold_request()).amount_nano
    with pytest.raises(InsufficientBalance) as info:
        await meter.place(a_hold_request())
    assert info.value.status == 402 and info.value.code == "insufficient_balance"
    assert f"needs {Decimal(needed) / 10**9} USD" in info.value.message
    assert "but 0.000001 USD is available" in info.value.message
    assert info.value.message.endswith(
        "Add credit or lower max_tokens. Top up at https://gateway.example/billing."
    )


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


async def test_a_hold_for_a_bound_the_service_computed_holds_that_bound() -> None:
    """Embeddings bound their inputs themselves and generate nothing: the hold is that
    bound at the prompt price, and a 402 speaks of inputs, not max_tokens."""
    rates = Rates(MODEL.price.prompt, MODEL.price.completion)
    request = HoldRequest(
        "req_e", 7, "key_1", MODEL.id, rates, False, {"input": "x"}, 0, 1, prompt_tokens=3_000
    )
    meter = LedgerMeter(FakeStore(10**9), hold_ttl_s=60)
    hold = meter.hold_for(request)
    assert (hold.prompt_tokens, hold.completion_tokens) == (3_000, 0)
    assert hold.amount_nano == cost_nano(3_000, 0, rates)
    with pytest.raises(InsufficientBalance, match="its input tokens") as info:
        await LedgerMeter(FakeStore(0), hold_ttl_s=60).place(request)
    assert "max_tokens" not in info.value.message
    assert info.value.message.endswith("Top up at /billing.")  # no public address configured


# leases, deferred settlements, idempotency -------------------------------------------------


class Clock:
    def __init__(self, now_ms: int = 1_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


async def test_a_live_hold_is_renewed_past_its_ttl_and_never_reaped() -> None:
    """Issue 18, finding 2: a stream longer than hold_ttl_s was reaped while it ran, at
    the full hold, and its real settlement was lost."""
    store, clock = FakeStore(10**9), Clock()
    billing = Billing(store, hold_ttl_s=60, reaper_interval_s=60, clock=clock)
    hold = await billing.meter.place(a_hold_request())
    outcome = Outcome()
    billing.meter.watch(hold, outcome)
    for _ in range(10):  # ten minutes of a stream, renewed every quarter lease
        clock.now_ms += billing.meter.renew_ms
        outcome.output_bytes += 10
        assert await billing.meter.renew_once() == 1
        assert await billing.reaper.reap_once() == 0
    assert store.holds[hold.request_id].output_bytes == 100
    outcome.status, outcome.usage = "ok", Usage(12, 50)
    await billing.meter.settle(hold, outcome)
    [settled] = store.settled
    assert (settled.settled_by, settled.completion_tokens) == ("usage", 50)
    assert billing.meter.live_holds == 0 and await billing.meter.renew_once() == 0


async def test_an_orphaned_hold_is_reaped_at_its_checkpoint() -> None:
    store, clock = FakeStore(10**9), Clock()
    billing = Billing(store, hold_ttl_s=60, reaper_interval_s=60, clock=clock)
    hold = await billing.meter.place(a_hold_request())
    outcome = Outcome()
    billing.meter.watch(hold, outcome)
    outcome.output_bytes = 30
    await billing.meter.renew_once()
    clock.now_ms += 60_000  # the process is gone: nobody renews it any more
    orphans = Billing(store, hold_ttl_s=60, reaper_interval_s=60, clock=clock)
    assert await orphans.reaper.reap_once() == 1
    [reaped] = store.settled
    assert (reaped.settled_by, reaped.completion_tokens) == ("expired-hold", 15)
    assert reaped.cost_nano == cost_nano(hold.prompt_tokens, 15, RATES)


async def test_a_settlement_the_database_refused_is_retried_at_the_real_usage() -> None:
    """Deliverable 2: a settlement that failed after the answer was sent was left to
    the reaper at the held amount; now it waits in memory, leased, and is retried."""
    store, clock = FakeStore(10**9), Clock()
    billing = Billing(store, hold_ttl_s=60, reaper_interval_s=60, clock=clock)
    hold = await billing.meter.place(a_hold_request())
    store.down = True
    with capture_logs() as logs:
        await billing.meter.settle(hold, Outcome("ok", Usage(12, 34)))
    assert [e["event"] for e in logs] == ["settle_deferred"]
    assert billing.meter.pending_settlements == 1 and store.settled == []
    assert await billing.meter.retry_once() == 0  # still down
    clock.now_ms += 120_000  # an outage longer than the lease: no renewal was written
    assert await billing.reaper.reap_once() == 0  # this process still has it
    store.down = False
    clock.now_ms += billing.meter.renew_ms
    await billing.meter.renew_once()  # the lease still runs while it waits
    clock.now_ms += billing.meter.renew_ms
    assert await billing.reaper.reap_once() == 0
    assert await billing.meter.retry_once() == 1
    [settled] = store.settled
    assert (settled.settled_by, settled.prompt_tokens, settled.completion_tokens) == (
        "usage", 12, 34,
    )  # fmt: skip
    assert billing.meter.pending_settlements == 0 and billing.meter.live_holds == 0


async def test_the_meter_runs_deferred_settlements_once_the_database_is_back() -> None:
    store = FakeStore(10**9)
    meter = LedgerMeter(store, hold_ttl_s=0.04)
    hold = await meter.place(a_hold_request())
    store.down = True
    await meter.settle(hold, Outcome("ok", Usage(1, 2)))
    running = asyncio.ensure_future(meter.run())
    try:
        await asyncio.sleep(0.05)
        store.down = False
        for _ in range(200):
            if store.settled:
                break
            await asyncio.sleep(0.01)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    [settled] = store.settled
    assert settled.completion_tokens == 2


async def test_a_hold_whose_commit_answer_was_lost_is_voided_once_the_database_answers() -> None:
    """Deliverable 2: a hold whose COMMIT was lost in flight answered 503 and stayed
    open, to be reaped in full; now it is voided (cost 0) once the database answers."""
    store = FakeStore(10**9)
    meter = LedgerMeter(store, hold_ttl_s=60)
    store.lost_commit = True
    with pytest.raises(ServiceUnavailable):
        await meter.place(a_hold_request())
    assert len(store.holds) == 1 and meter.pending_settlements == 1
    assert await meter.retry_once() == 1
    [void] = store.settled
    assert (void.cost_nano, void.status) == (0, "refused")
    assert store.holds == {} and store.balance_nano == 10**9


def keyed(request_id: str, key: str = "k-1", body: bytes = b"{}") -> HoldRequest:
    idempotency = Idempotency.of(key, body)
    return replace(
        a_hold_request(request_id),
        idempotency_key=idempotency.key_hash,
        fingerprint=idempotency.body_hash,
    )


async def test_an_idempotency_key_holds_and_charges_once() -> None:
    store = FakeStore(10**9)
    meter = LedgerMeter(store, hold_ttl_s=60)
    hold = await meter.place(keyed("req_1"))
    with pytest.raises(IdempotencyConflict) as running:
        await meter.place(keyed("req_2"))
    assert (running.value.status, running.value.error_code) == (409, "idempotency_key_in_use")
    with pytest.raises(IdempotencyKeyReused) as other_body:
        await meter.place(keyed("req_3", body=b'{"x":1}'))
    assert (other_body.value.status, other_body.value.error_code) == (
        422,
        "idempotency_key_reused",
    )
    await meter.settle(hold, Outcome("ok", Usage(1, 1)))
    with pytest.raises(IdempotencyConflict) as done:
        await meter.place(keyed("req_4"))
    assert done.value.error_code == "idempotency_key_used" and "req_1" in done.value.message
    assert list(store.hold_rows) == ["req_1"] and len(store.settled) == 1
    await meter.place(keyed("req_5", key="k-2"))  # another key is another request


async def test_a_key_whose_request_was_voided_may_be_retried() -> None:
    store = FakeStore(10**9)
    meter = LedgerMeter(store, hold_ttl_s=60)
    hold = await meter.place(keyed("req_1"))
    await meter.settle(hold, Outcome("upstream_error"))
    again = await meter.place(keyed("req_2"))
    assert again.request_id in store.holds


async def test_a_capped_settlement_is_logged_and_counted() -> None:
    capped: list[str] = []

    class Observer:
        def placed(self, hold: Hold) -> None:
            pass

        def settled(self, settlement: Settlement, resolved: bool) -> None:
            if settlement.capped:
                capped.append(settlement.hold.model)

    store = FakeStore(10**9)
    meter = LedgerMeter(store, hold_ttl_s=60, observer=Observer())
    hold = await meter.place(a_hold_request(max_tokens=4))
    with capture_logs() as logs:
        await meter.settle(hold, Outcome("ok", Usage(50_000, 4)))
    [event] = [e for e in logs if e["event"] == "settlement_capped"]
    assert event["cost_nano"] > event["held_nano"] == hold.amount_nano
    assert capped == [MODEL.id]


async def test_a_settlement_that_fails_for_another_reason_lets_its_lease_lapse() -> None:
    """Only an outage is retried; any other failure stops the renewals, so the reaper
    settles the hold instead of its lease being renewed for ever."""

    class Refusing(FakeStore):
        async def settle(self, settlement: Settlement) -> bool:
            raise InvariantViolation("a bug")

    meter = LedgerMeter(Refusing(10**9), hold_ttl_s=60)
    hold = await meter.place(a_hold_request())
    with pytest.raises(InvariantViolation):
        await meter.settle(hold, Outcome("ok", Usage(1, 1)))
    assert not meter.is_live(hold.request_id) and await meter.renew_once() == 0
