"""Every settle path end to end, through the official SDK, on SQLite and PostgreSQL:
non-stream, stream with and without the usage chunk asked for, no usage at all
(`no-usage`), a dropped stream, a client that leaves, and a hold that does not fit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from sqlalchemy import select
from typer.testing import CliRunner

from teegate.app import create_app
from teegate.billing import Rates, cost_nano, nano_to_usd, prompt_upper_bound, usd_to_nano
from teegate.cli import app as cli_app
from teegate.config import Settings
from teegate.devstack import DevstackConfig, build_app
from teegate.store import create_engine
from tests.support.billing import ENGINES, books, database_url, reflected, settled_generation
from tests.support.gateway import Devstack, Gateway, gateway_settings, prepare_database
from tests.support.servers import serving

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"  # reasoning: its stream carries reasoning_content
V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"


@dataclass
class Rig:
    gateway: Gateway
    devstack: Devstack
    url: str
    beta_key: str

    def rates(self, model: str) -> Rates:
        pricing = self.gateway.client().models.retrieve(model).model_dump()["pricing"]
        return Rates(usd_to_nano(pricing["prompt"]), usd_to_nano(pricing["completion"]))

    def get(self, path: str, key: str | None = None, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.gateway.key}"}
        return httpx.get(f"{self.gateway.url}{path}", headers=headers, params=params)

    def generation(self, request_id: str, key: str | None = None) -> dict[str, Any]:
        return settled_generation(self.gateway.url, key or self.gateway.key, request_id)


@pytest.fixture(scope="module", params=ENGINES)
def module_rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Rig]:  # fmt: skip
    directory = tmp_path_factory.mktemp("billing")
    config = DevstackConfig(chunk_delay_s=0.01, completion_tokens=60, first_token_delay_s=0.2)
    with database_url(request.param, directory) as url, serving(build_app(config)) as upstream:
        settings = gateway_settings(directory, upstream.url, database_url=url).model_copy(
            update={"public_url": "https://gateway.example"}
        )
        key = prepare_database(settings, "acme", credit_usd="100")
        beta_key = prepare_database_account(settings, "beta", "0.05")
        with serving(create_app(settings)) as server:
            yield Rig(Gateway(server.url, settings, key, "acme"), Devstack(upstream.url), url,
                      beta_key)  # fmt: skip


def prepare_database_account(settings: Settings, name: str, credit_usd: str) -> str:
    """A second account in an already migrated database (upgrade is idempotent)."""
    return prepare_database(settings, name, credit_usd=credit_usd)


@pytest.fixture
def rig(module_rig: Rig) -> Iterator[Rig]:
    module_rig.devstack.admin("POST", "reset")
    yield module_rig
    books(module_rig.url, "acme").check()
    books(module_rig.url, "beta").check()


def messages(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def streamed_bytes(chunks: list[Any]) -> int:
    total = 0
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            extra = delta.model_extra or {}
            total += len((delta.content or "").encode())
            total += len((extra.get("reasoning_content") or "").encode())
    return total


def stream(rig: Rig, **kwargs: Any) -> tuple[str, list[Any]]:
    client = rig.gateway.client()
    with client.chat.completions.with_streaming_response.create(stream=True, **kwargs) as response:
        return response.headers["x-request-id"], list(response.parse())


def test_non_stream_settles_from_usage_at_the_marked_up_price(rig: Rig) -> None:
    body: CompletionCreateParamsNonStreaming = {
        "model": V3,
        "messages": messages("price me"),
        "max_tokens": 30,
    }
    raw = rig.gateway.client().chat.completions.with_raw_response.create(**body)
    completion, request_id = raw.parse(), raw.http_response.headers["x-request-id"]
    assert completion.usage is not None
    record = rig.generation(request_id)
    rates = rig.rates(V3)
    usage = completion.usage
    assert (record["id"], record["model"], record["settled_by"], record["status"]) == (
        request_id,
        V3,
        "usage",
        "ok",
    )
    assert (record["tokens_prompt"], record["tokens_completion"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert record["total_cost"] == nano_to_usd(
        cost_nano(usage.prompt_tokens, usage.completion_tokens, rates)
    )
    estimate = prompt_upper_bound(body)
    assert usage.prompt_tokens <= estimate  # the hold's prompt bound really is an upper bound
    assert record["held"] == nano_to_usd(cost_nano(estimate, 30, rates))
    assert record["streamed"] is False and record["capped"] is False


def test_stream_settles_from_usage_the_client_did_not_ask_to_see(rig: Rig) -> None:
    whole = rig.gateway.client().chat.completions.create(
        model=V3, messages=messages("same answer"), max_tokens=25
    )
    request_id, chunks = stream(rig, model=V3, messages=messages("same answer"), max_tokens=25)
    assert all(chunk.usage is None for chunk in chunks)  # not asked for: not forwarded
    record = rig.generation(request_id)
    assert whole.usage is not None
    assert (record["settled_by"], record["streamed"]) == ("usage", True)
    assert (record["tokens_prompt"], record["tokens_completion"]) == (
        whole.usage.prompt_tokens,
        whole.usage.completion_tokens,
    )


def test_stream_forwards_the_usage_chunk_when_asked_and_settles_from_it(rig: Rig) -> None:
    request_id, chunks = stream(rig, model=R1, messages=messages("show usage"), max_tokens=25,
                                stream_options={"include_usage": True})  # fmt: skip
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert sum(chunk.usage is not None for chunk in chunks) == 1
    record = rig.generation(request_id)
    assert (record["tokens_prompt"], record["tokens_completion"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert record["total_cost"] == nano_to_usd(
        cost_nano(usage.prompt_tokens, usage.completion_tokens, rig.rates(R1))
    )


def test_stream_without_usage_settles_from_streamed_bytes_never_below_usage(rig: Rig) -> None:
    # max_tokens well above the answer, so the fallback count is not capped by the hold
    body: CompletionCreateParamsNonStreaming = {
        "model": R1,
        "messages": messages("no usage here"),
        "max_tokens": 1000,
    }
    truth = rig.gateway.client().chat.completions.create(**body)
    rig.devstack.set_faults("no-usage")
    request_id, chunks = stream(rig, stream_options={"include_usage": True}, **body)
    assert all(chunk.usage is None for chunk in chunks)
    record = rig.generation(request_id)
    sent = streamed_bytes(chunks)
    assert sent > 0
    assert (record["settled_by"], record["status"]) == ("fallback", "ok")
    assert record["tokens_prompt"] == prompt_upper_bound(body)
    assert record["tokens_completion"] == -(-sent // 2)
    assert truth.usage is not None
    fair = cost_nano(truth.usage.prompt_tokens, truth.usage.completion_tokens, rig.rates(R1))
    assert Decimal(record["total_cost"]) >= Decimal(nano_to_usd(fair))


def test_non_stream_without_usage_settles_from_content_bytes(rig: Rig) -> None:
    rig.devstack.set_faults("no-usage")
    body: CompletionCreateParamsNonStreaming = {
        "model": R1,
        "messages": messages("no usage, whole"),
        "max_tokens": 1000,
    }
    raw = rig.gateway.client().chat.completions.with_raw_response.create(**body)
    completion = raw.parse()
    assert completion.usage is None
    message = completion.choices[0].message
    sent = len((message.content or "").encode()) + len(
        ((message.model_extra or {}).get("reasoning_content") or "").encode()
    )
    record = rig.generation(raw.http_response.headers["x-request-id"])
    assert (record["settled_by"], record["tokens_completion"]) == ("fallback", -(-sent // 2))


def test_a_dropped_stream_settles_what_was_streamed(rig: Rig) -> None:
    rig.devstack.set_faults("drop-mid-stream")
    client = rig.gateway.client()
    chunks: list[Any] = []
    with client.chat.completions.with_streaming_response.create(
        model=V3, messages=messages("drop me"), max_tokens=1000, stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        with pytest.raises(openai.APIError):
            for chunk in response.parse():
                chunks.append(chunk)
    sent = streamed_bytes(chunks)
    assert sent > 0
    record = rig.generation(request_id)
    assert (record["settled_by"], record["status"]) == ("fallback", "upstream_error")
    assert record["tokens_completion"] == -(-sent // 2)
    assert Decimal(record["total_cost"]) < Decimal(record["held"])


def test_a_client_that_leaves_pays_for_what_was_streamed(rig: Rig) -> None:
    headers = {"Authorization": f"Bearer {rig.gateway.key}"}
    body = {"model": V3, "messages": messages("leave early"), "max_tokens": 400, "stream": True}
    received = 0
    with httpx.stream("POST", f"{rig.gateway.url}/v1/chat/completions", json=body,
                      headers=headers) as response:  # fmt: skip
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    received += len((choice["delta"].get("content") or "").encode())
                if received > 20:
                    break
    record = rig.generation(request_id)
    assert (record["settled_by"], record["status"]) == ("fallback", "client_gone")
    assert -(-received // 2) <= record["tokens_completion"] < 60 * 4  # not the whole answer
    assert Decimal(record["total_cost"]) < Decimal(record["held"]) / 2


def test_a_hold_that_does_not_fit_is_402_and_never_reaches_the_upstream(rig: Rig) -> None:
    client = rig.gateway.client(api_key=rig.beta_key)
    before = rig.devstack.chat_requests()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=V3, messages=messages("too dear"), max_tokens=65536)
    assert info.value.status_code == 402
    assert info.value.code == "insufficient_balance"
    assert "USD held against your balance" in info.value.message
    assert "but 0.05 USD is available" in info.value.message
    assert info.value.message.endswith("Top up at https://gateway.example/billing.")
    assert rig.devstack.chat_requests() == before
    assert books(rig.url, "beta").holds == 0


def test_balance_usage_and_generation_show_only_the_callers_account(rig: Rig) -> None:
    acme = rig.gateway.client().chat.completions.with_raw_response.create(
        model=V3, messages=messages("mine"), max_tokens=10
    )
    acme_id = acme.http_response.headers["x-request-id"]
    rig.generation(acme_id)
    beta = rig.gateway.client(api_key=rig.beta_key).chat.completions.with_raw_response.create(
        model=V3, messages=messages("yours"), max_tokens=10
    )
    beta_id = beta.http_response.headers["x-request-id"]
    rig.generation(beta_id, rig.beta_key)

    beta_usage = rig.get("/v1/usage", rig.beta_key).json()["data"]
    assert [r["id"] for r in beta_usage] == [beta_id]
    assert acme_id in [r["id"] for r in rig.get("/v1/usage", limit="1000").json()["data"]]
    hidden = rig.get("/v1/generation", rig.beta_key, id=acme_id)
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "not_found")

    balance = rig.get("/v1/balance", rig.beta_key).json()
    state = books(rig.url, "beta")
    assert balance == {
        "object": "balance", "currency": "USD", "balance": nano_to_usd(state.balance_nano),
        "held": nano_to_usd(state.held_nano), "available": nano_to_usd(state.balance_nano),
    }  # fmt: skip
    assert state.balance_nano == usd_to_nano("0.05") - usd_to_nano(beta_usage[0]["total_cost"])


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [("/v1/generation", {}, "id"), ("/v1/usage", {"since": "yesterday"}, "since"),
     ("/v1/usage", {"limit": "0"}, "limit")],
)  # fmt: skip
def test_bad_query_parameters_are_400(
    rig: Rig, path: str, params: dict[str, str], param: str
) -> None:
    response = rig.get(path, **params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_usage_command_lists_records_with_their_costs(rig: Rig) -> None:
    raw = rig.gateway.client().chat.completions.with_raw_response.create(
        model=V3, messages=messages("for the cli"), max_tokens=10
    )
    request_id = raw.http_response.headers["x-request-id"]
    record = rig.generation(request_id)
    env = {"TEEGATE_DATABASE_URL": rig.url, "TEEGATE_ENVIRONMENT": "development"}
    result = CliRunner().invoke(cli_app, ["usage", "--account", "acme", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert rows[request_id]["total_cost"] == record["total_cost"]
    assert rows[request_id]["account"] == "acme"
    assert all(row["account"] == "acme" for row in rows.values())
    later = CliRunner().invoke(cli_app, ["usage", "--since", "2999-01-01", "--json"], env=env)
    assert later.exit_code == 0 and json.loads(later.stdout) == []
    unknown = CliRunner().invoke(cli_app, ["usage", "--account", "nobody"], env=env)
    assert unknown.exit_code == 1


def test_no_text_reaches_the_database_or_the_logs(
    rig: Rig, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "zebra-canary-7731"
    rig.gateway.client().chat.completions.create(model=R1, messages=messages(secret),
                                                 max_tokens=10)  # fmt: skip
    assert secret not in json.dumps(dump_tables(rig.url), default=str)
    if rig.url.startswith("sqlite"):  # the pages and the WAL too, not only what a query shows
        database = Path(rig.url.split("///", 1)[1])
        for path in database.parent.glob(database.name + "*"):
            assert secret.encode() not in path.read_bytes()
    out, err = capfd.readouterr()
    assert secret not in out + err


def dump_tables(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                tables = (await reflected(conn)).sorted_tables
                return [list(map(tuple, await conn.execute(select(t)))) for t in tables]
        finally:
            await engine.dispose()

    return asyncio.run(run())
