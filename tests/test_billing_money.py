"""Markup and cost arithmetic on the sample catalog's prices, exact to the nano-USD,
with no float anywhere on the money path."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from teegate.billing import (
    Hold,
    MoneyError,
    Rates,
    Settlement,
    cost_nano,
    exact_int,
    marked_up_price,
    nano_to_usd,
)
from teegate.catalog import parse_entry
from teegate.devstack import DevstackConfig

MARKUP = Decimal("1.85")

# model: (upstream USD/1M prompt, completion) -> marked-up nano-USD/1M (prompt, completion)
SAMPLE_PRICES = {
    "deepseek-ai/DeepSeek-V3.2-TEE": ("0.25", "0.38", 462_500_000, 703_000_000),
    "deepseek-ai/DeepSeek-V3.1-Terminus-TEE": ("0.23", "0.9", 425_500_000, 1_665_000_000),
    "deepseek-ai/DeepSeek-V3.1-TEE": ("0.2", "0.8", 370_000_000, 1_480_000_000),
    "deepseek-ai/DeepSeek-V3-0324-TEE": ("0.24", "0.84", 444_000_000, 1_554_000_000),
    "deepseek-ai/DeepSeek-R1-0528-TEE": ("0.4", "1.75", 740_000_000, 3_237_500_000),
    "tngtech/DeepSeek-TNG-R1T2-Chimera-TEE": ("0.3", "1.2", 555_000_000, 2_220_000_000),
    "Qwen/Qwen3.5-397B-A17B-TEE": ("0.3", "1.2", 555_000_000, 2_220_000_000),
    "Qwen/Qwen3-235B-A22B-Instruct-2507-TEE": ("0.08", "0.55", 148_000_000, 1_017_500_000),
    "Qwen/Qwen3-32B-TEE": ("0.104", "0.416", 192_400_000, 769_600_000),
    "Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8-TEE": ("0.22", "0.95", 407_000_000, 1_757_500_000),
    "moonshotai/Kimi-K2.5-TEE": ("0.45", "2.2", 832_500_000, 4_070_000_000),
    "MiniMaxAI/MiniMax-M2.5-TEE": ("0.15", "1.1", 277_500_000, 2_035_000_000),
    "openai/gpt-oss-120b-TEE": ("0.05", "0.4", 92_500_000, 740_000_000),
    "zai-org/GLM-4.7-TEE": ("0.4", "1.5", 740_000_000, 2_775_000_000),
    "zai-org/GLM-5.1-TEE": ("0.6", "2.2", 1_110_000_000, 4_070_000_000),
    "XiaomiMiMo/MiMo-V2-Flash-TEE": ("0.09", "0.29", 166_500_000, 536_500_000),
    "Qwen/Qwen3-Embedding-0.6B-TEE": ("0.02", "0", 37_000_000, 0),  # embeddings: input only
}


def sample_catalog() -> dict[str, dict[str, object]]:
    text = DevstackConfig().catalog_path.read_text()
    return {m["id"]: m for m in json.loads(text, parse_float=Decimal)["data"]}


@pytest.mark.parametrize("model_id", sorted(SAMPLE_PRICES))
def test_catalog_prices_are_marked_up_exactly(model_id: str) -> None:
    prompt_usd, completion_usd, prompt_nano, completion_nano = SAMPLE_PRICES[model_id]
    entry = sample_catalog()[model_id]
    assert entry["pricing"] == {
        "prompt": Decimal(prompt_usd),
        "completion": Decimal(completion_usd),
    }
    model = parse_entry(entry, upstream="devstack", markup=MARKUP)
    assert (model.price.prompt, model.price.completion) == (prompt_nano, completion_nano)
    assert type(model.price.prompt) is int and type(model.price.completion) is int
    assert Decimal(nano_to_usd(prompt_nano)) == Decimal(prompt_usd) * MARKUP


def test_every_confidential_sample_model_is_in_the_table() -> None:
    confidential = {i for i, m in sample_catalog().items() if m["confidential_compute"]}
    assert confidential == set(SAMPLE_PRICES)


@pytest.mark.parametrize(
    ("rates", "prompt", "completion", "cost"),
    [
        ((740_000_000, 3_237_500_000), 0, 0, 0),
        ((740_000_000, 3_237_500_000), 1, 0, 740),
        ((740_000_000, 3_237_500_000), 0, 1, 3_238),  # 3237.5 rounds up
        ((740_000_000, 3_237_500_000), 1_000, 500, 2_358_750),
        ((740_000_000, 3_237_500_000), 7, 13, 47_268),  # 47267.5 rounds up
        ((740_000_000, 3_237_500_000), 10**9, 10**9, 3_977_500_000_000),
        ((192_400_000, 769_600_000), 1, 1, 962),  # rounded once on the sum, not per term
        ((192_400_000, 769_600_000), 3, 0, 578),  # 577.2
        ((166_500_000, 536_500_000), 1, 0, 167),  # 166.5
        ((166_500_000, 536_500_000), 1, 1, 703),
        ((462_500_000, 703_000_000), 10**6, 10**6, 1_165_500_000),  # $1.1655
        ((92_500_000, 740_000_000), 1, 0, 93),
        ((92_500_000, 740_000_000), 2, 0, 185),
        ((1, 1), 1, 0, 1),  # the cheapest price there can be: one token still costs
        ((0, 0), 10**6, 10**6, 0),  # a free model is free
    ],
)
def test_cost_rule(rates: tuple[int, int], prompt: int, completion: int, cost: int) -> None:
    result = cost_nano(prompt, completion, Rates(*rates))
    assert result == cost
    assert type(result) is int


def test_cost_is_the_exact_amount_rounded_up_and_never_zero_for_tokens() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        rates = Rates(rng.randint(1, 5 * 10**10), rng.randint(1, 5 * 10**10))
        prompt, completion = rng.randint(0, 10**7), rng.randint(0, 10**7)
        exact = (
            Decimal(prompt) * rates.prompt_nano_per_mtok
            + Decimal(completion) * rates.completion_nano_per_mtok
        ) / 10**6
        cost = cost_nano(prompt, completion, rates)
        assert exact <= cost < exact + 1
        assert cost > 0 or prompt == completion == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: cost_nano(1.0, 0, Rates(1, 1)),  # type: ignore[arg-type]
        lambda: cost_nano(0, 2.5, Rates(1, 1)),  # type: ignore[arg-type]
        lambda: cost_nano(True, 0, Rates(1, 1)),
        lambda: Rates(0.74, 3),  # type: ignore[arg-type]
        lambda: Rates(740_000_000, Decimal("3.2375")),  # type: ignore[arg-type]
        lambda: Rates(-1, 0),
        lambda: nano_to_usd(1.5),  # type: ignore[arg-type]
        lambda: exact_int(1e9, "amount"),
        lambda: marked_up_price(0.4, MARKUP),  # type: ignore[arg-type]
    ],
)
def test_a_float_on_the_money_path_fails_loudly(call: object) -> None:
    with pytest.raises(MoneyError):
        call()  # type: ignore[operator]


def test_holds_and_settlements_refuse_floats() -> None:
    rates = Rates(740_000_000, 3_237_500_000)
    fields = {
        "request_id": "r", "account_id": 1, "key_id": "k", "model": "m", "stream": False,
        "rates": rates, "prompt_tokens": 10, "completion_tokens": 10,
        "amount_nano": cost_nano(10, 10, rates), "created_ms": 1, "expires_ms": 2,
    }  # fmt: skip
    hold = Hold(**fields)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        Hold(**{**fields, "amount_nano": float(hold.amount_nano)})  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        Hold(**{**fields, "prompt_tokens": 10.0})  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        Settlement(
            hold=hold, prompt_tokens=1, completion_tokens=1, cost_nano=1.0,  # type: ignore[arg-type]
            settled_by="usage", status="ok", capped=False, settled_ms=3,
        )  # fmt: skip
