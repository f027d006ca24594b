"""Mixed load, the books checked after it, and the results the fault suites record.

Every fault of tests/faults/ is tried N times (`TEEGATE_FAULTS_N`) under concurrent
load: streams and whole answers, through the official SDK. After each fault the
ledger is read from its tables and every invariant checked; each violation is one
thing *lost*. The suites append one JSON line per fault to the results file
(`TEEGATE_RELIABILITY_RESULTS`), which `python -m bench.reliability` renders into
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from teegate.devstack import DevstackConfig
from tests.support.billing import LedgerState, ledger_state, reflected
from tests.support.gateway import Devstack, gateway_settings, prepare_database
from tests.support.processes import GatewayProcess, PrivatePostgres, Resources, gateway_config
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
V3 = "deepseek-ai/DeepSeek-V3-0324-TEE"


def tries() -> int:
    """How many times each fault is tried: small in CI, larger by hand."""
    return int(os.environ.get("TEEGATE_FAULTS_N", "2"))


def results_file() -> Path:
    default = REPO / "bench" / ".work" / "reliability" / "faults.jsonl"
    return Path(os.environ.get("TEEGATE_RELIABILITY_RESULTS", default))


@dataclass
class Outcome:
    """What one client saw."""

    stream: bool
    request_id: str | None = None
    status: int | None = None
    """HTTP status; None when no response came (the connection failed)."""
    code: str | None = None
    delivered: int = 0
    """Content the client received: chunks of a stream, 1 for a whole answer."""
    complete: bool = False
    error: str | None = None


@dataclass
class Trial:
    """One fault's record: how often it was tried, what the clients saw, what was lost."""

    suite: str
    fault: str
    tries: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    leaks: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    """Answers other than the fault calls for (a 500 where a 503 is due, say)."""
    engine: str = "sqlite"

    def record(self) -> None:
        statuses: dict[str, int] = {}
        for outcome in self.outcomes:
            key = str(outcome.status or "no response")
            key += f" {outcome.code}" if outcome.code else ""
            statuses[key] = statuses.get(key, 0) + 1
        row = {
            "suite": self.suite, "fault": self.fault, "engine": self.engine,
            "tries": self.tries, "requests": len(self.outcomes), "statuses": statuses,
            "delivered": sum(o.delivered > 0 for o in self.outcomes),
            "lost": self.lost, "leaks": self.leaks, "unexpected": self.unexpected,
            "at": time.time(),
        }  # fmt: skip
        path = results_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(json.dumps(row) + "\n")

    def expect(self, ok: Callable[[Outcome], bool], what: str) -> None:
        """Every client must have seen `what`; the others are recorded, and fail the test."""
        others: dict[str, int] = {}
        for outcome in self.outcomes:
            if not ok(outcome):
                seen = f"{outcome.status or 'no response'} {outcome.code or outcome.error or ''}"
                others[seen.strip()] = others.get(seen.strip(), 0) + 1
        if others:
            self.unexpected.append(f"expected {what}, got {others}")

    def assert_nothing_lost(self) -> None:
        self.record()
        assert not self.lost, f"{self.fault}: {self.lost}"
        assert not self.leaks, f"{self.fault}: leaked {self.leaks}"
        assert not self.unexpected, f"{self.fault}: {self.unexpected}"


def chat_body(prompt: str = "say something", max_tokens: int = 64) -> dict[str, Any]:
    return {"model": V3, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens}  # fmt: skip


async def one_request(
    client: openai.AsyncOpenAI,
    body: dict[str, Any],
    *,
    stream: bool,
    leave_after: int | None = None,
) -> Outcome:
    """One chat completion through the SDK; with `leave_after`, a stream is abandoned
    (the connection closed) after that many chunks."""
    outcome = Outcome(stream=stream)
    completions = client.chat.completions
    try:
        if stream:
            async with completions.with_streaming_response.create(**body, stream=True) as response:
                outcome.request_id = response.headers.get("x-request-id")
                outcome.status = response.status_code
                chunks = await response.parse()
                async for chunk in chunks:
                    if chunk.choices and chunk.choices[0].delta.content:
                        outcome.delivered += 1
                    if leave_after is not None and outcome.delivered >= leave_after:
                        return outcome
                outcome.complete = True
        else:
            raw = await completions.with_raw_response.create(**body)
            outcome.request_id = raw.headers.get("x-request-id")
            outcome.status = raw.status_code
            completion = raw.parse()
            outcome.delivered = int(bool(completion.choices[0].message.content))
            outcome.complete = True
    except openai.APIStatusError as exc:
        outcome.status = exc.status_code
        outcome.request_id = exc.response.headers.get("x-request-id")
        outcome.code = str(exc.code)
        outcome.error = type(exc).__name__
    except (openai.APIConnectionError, openai.APIError) as exc:
        outcome.error = type(exc).__name__
    return outcome


async def mixed_load(
    url: str,
    key: str,
    requests: int,
    *,
    body: Callable[[int], dict[str, Any]] = lambda _: chat_body(),
    disconnect: random.Random | None = None,
    timeout_s: float = 30,
) -> list[Outcome]:
    """`requests` at once, every other one a stream. With `disconnect`, each stream
    is abandoned after a random number of chunks (0 to 8), and each whole answer
    after a random delay, its connection closed."""
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=timeout_s
    ) as client:

        async def one(i: int) -> Outcome:
            stream = i % 2 == 0
            if disconnect is None:
                return await one_request(client, body(i), stream=stream)
            if stream:
                return await one_request(
                    client, body(i), stream=True, leave_after=disconnect.randint(0, 8)
                )
            try:
                return await asyncio.wait_for(
                    one_request(client, body(i), stream=False), disconnect.uniform(0, 0.4)
                )
            except TimeoutError:
                return Outcome(stream=False, error="client left")

        return list(await asyncio.gather(*(one(i) for i in range(requests))))


async def lost_in_books(
    engine_url: str, account: str, outcomes: Sequence[Outcome], *, open_holds_wait_s: float = 20
) -> list[str]:
    """Every invariant the ledger must keep, read from its tables: each broken one
    is a line of what was lost.

    - no overdraft beyond the holds, balance = Σ entries, Σ usage = Σ debits,
      held = Σ open holds (`LedgerState.check`);
    - nothing billed twice: at most one debit per request;
    - nothing delivered unbilled: every answer that reached a client is settled;
    - no hold left open past its expiry (waited for: a settlement follows the answer).
    """
    from teegate.store import AccountStore, create_engine

    engine = create_engine(engine_url)
    lost: list[str] = []
    try:
        account_id = (await AccountStore(engine).get_account(account)).id
        deadline = time.monotonic() + open_holds_wait_s
        while True:
            state: LedgerState = await ledger_state(engine, account_id)
            if state.open_holds == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        try:
            state.check()
        except AssertionError as exc:
            lost.append(f"invariant: {exc}")
        async with engine.connect() as conn:
            tables = (await reflected(conn)).tables
            entries, holds, usage = (
                tables["ledger_entries"],
                tables["holds"],
                tables["usage_records"],
            )
            twice = await conn.scalar(
                select(func.count()).select_from(
                    select(entries.c.reference).where(entries.c.kind == "debit")
                    .group_by(entries.c.reference).having(func.count() > 1).subquery()
                )
            )  # fmt: skip
            now_ms = int(time.time() * 1000)
            expired_open = await conn.scalar(
                select(func.count()).where(holds.c.state == "open", holds.c.expires_ms < now_ms)
            )
            settled = set((await conn.execute(select(usage.c.request_id))).scalars())
        if twice:
            lost.append(f"billed twice: {twice} requests with more than one debit")
        if expired_open:
            lost.append(f"{expired_open} holds open past their expiry")
        if state.open_holds:
            lost.append(f"{state.open_holds} holds still open")
        unbilled = [o.request_id for o in outcomes if o.delivered and o.request_id not in settled]
        if unbilled:
            lost.append(f"delivered unbilled: {unbilled}")
    finally:
        await engine.dispose()
    return lost


async def in_flight(devstack: Devstack, requests: int) -> None:
    """Until the upstream is generating `requests` answers at once: a fault injected
    then lands mid-request, however fast or slow the machine."""
    deadline = time.monotonic() + 20
    while (await asyncio.to_thread(devstack.admin, "GET", "stats"))["chat_in_flight"] < requests:
        assert time.monotonic() < deadline, "the load never reached the upstream"
        await asyncio.sleep(0.01)


def settle_resources(
    read: Callable[[], Resources], baseline: Resources, wait_s: float = 10
) -> dict[str, int]:
    """What stays above `baseline` once the process is idle again (connections and
    descriptors of finished requests close just after them)."""
    deadline = time.monotonic() + wait_s
    while True:
        over = read().exceeds(baseline)
        if not over or time.monotonic() > deadline:
            return over
        time.sleep(0.1)


PACED = DevstackConfig(chunk_delay_s=0.01, first_token_delay_s=1.0, completion_tokens=40)
"""Streams of about half a second, so faults and disconnects land mid-stream; the
slow first token (1 s) stays under the gateway's read timeout (2 s), a hang does not."""

LOAD = 8
"""Concurrent requests per try: half streams, half whole answers."""


@dataclass
class Rig:
    gateway: GatewayProcess
    devstack: Devstack
    database_url: str
    key: str
    account: str
    baseline: Resources


def start_rig(
    directory: Path,
    upstream_url: str,
    database_url: str,
    *,
    attestation: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    **settings: Any,
) -> Rig:
    """A funded account on a fresh database, and a warmed-up gateway serving it."""
    account = "faults"
    key = prepare_database(
        gateway_settings(directory, upstream_url, database_url=database_url),
        account, credit_usd="1000",
    )  # fmt: skip
    port = free_port()
    config = directory / "teegate.toml"
    config.write_text(
        gateway_config(
            port=port,
            data_dir=directory,
            database_url=database_url,
            upstream=upstream_url,
            attestation=attestation,
            read_s=2,
            reaper_interval_s=0.2,
            **settings,
        )
    )
    gateway = GatewayProcess(config, directory / "gateway.log", port, **(env or {})).start()
    asyncio.run(mixed_load(gateway.url, key, LOAD))
    return Rig(gateway, Devstack(upstream_url), database_url, key, account, gateway.resources())


def fresh_database(server: PrivatePostgres, name: str, port: int | None = None) -> str:
    """A new database on `server`, its URL through `port` (a relay's) when given."""

    async def create() -> None:
        engine = create_async_engine(server.admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()

    asyncio.run(create())
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port or server.port}/{name}"
