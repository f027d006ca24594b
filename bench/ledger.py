"""Micro-benchmark of the ledger's hot path: hold placement and settlement, both engines.

The HTTP bench (`bench/run`) mixes the ledger with everything else a request does;
this one drives `Ledger.place_hold` and `Ledger.settle` alone, through the group
committer, the way the chat service calls them, so a change to the store can be
measured on its own. Per engine and concurrency: ops/s (wall) and µs of CPU per op
(`time.process_time()`: every thread of this process, so a writer or driver thread
counts; the PostgreSQL server's own CPU does not).

    .venv/bin/python -m bench.ledger                 # both engines, c = 1 and 32
    .venv/bin/python -m bench.ledger --engine sqlite --ops 4000 --pin 0

SQLite lives in a temporary directory; PostgreSQL in a database of its own
(`teegate_bench_ledger`, recreated and dropped), so the HTTP bench's is untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from teegate.billing import Hold, Rates, Settlement, cost_nano, settlement_for
from teegate.store import AccountStore, Ledger, create_engine, upgrade

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_DB = "teegate_bench_ledger"
PG_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}"
RATES = Rates(740_000_000, 3_237_500_000)
T = TypeVar("T")
CREDIT_NANO = 10**18  # never the limit: this measures cost, not refusals


@dataclass(frozen=True)
class Result:
    engine: str
    concurrency: int
    op: str
    ops: int
    wall_s: float
    cpu_s: float
    transactions: int

    @property
    def batch(self) -> float:
        return self.ops / max(self.transactions, 1)

    @property
    def per_s(self) -> float:
        return self.ops / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.ops * 1e6


class _Usage:
    def __init__(self, prompt: int, completion: int) -> None:
        self.prompt_tokens = prompt
        self.completion_tokens = completion


def _hold(account_id: int, request_id: str, now_ms: int) -> Hold:
    prompt, completion = 12, 1024  # the HTTP bench's body: a short prompt, max_tokens 1024
    return Hold(
        request_id=request_id,
        account_id=account_id,
        key_id="key_bench",
        model="deepseek-ai/DeepSeek-V3-0324-TEE",
        stream=False,
        rates=RATES,
        prompt_tokens=prompt,
        completion_tokens=completion,
        amount_nano=cost_nano(prompt, completion, RATES),
        created_ms=now_ms,
        expires_ms=now_ms + 600_000,
    )


def _settlement(hold: Hold) -> Settlement:
    return settlement_for(
        hold, status="ok", usage=_Usage(12, 13), output_bytes=0, now_ms=hold.created_ms + 1
    )


async def _drive(
    items: Iterable[T], concurrency: int, call: Callable[[T], Awaitable[object]]
) -> tuple[float, float]:
    """`concurrency` callers, each awaiting one call at a time (a closed loop, like wrk)."""
    source = iter(items)

    async def worker() -> None:
        for item in source:
            await call(item)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall, time.process_time() - cpu


_serial = itertools.count()


async def _round(
    ledger: Ledger, account_id: int, engine: str, concurrency: int, ops: int
) -> list[Result]:
    now_ms = time.time_ns() // 1_000_000
    holds = [_hold(account_id, f"req_{next(_serial):012d}", now_ms) for _ in range(ops)]
    before = ledger.writer.transactions
    wall, cpu = await _drive(holds, concurrency, ledger.place_hold)
    placed = Result(
        engine, concurrency, "hold", ops, wall, cpu, ledger.writer.transactions - before
    )
    settlements = [_settlement(h) for h in holds]
    before = ledger.writer.transactions
    wall, cpu = await _drive(settlements, concurrency, ledger.settle)
    settled = Result(
        engine, concurrency, "settle", ops, wall, cpu, ledger.writer.transactions - before
    )
    return [placed, settled]


@contextlib.asynccontextmanager
async def _database(engine: str, directory: Path) -> AsyncIterator[str]:
    if engine == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'ledger.db'}"
        return
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {PG_DB}")
        yield PG_URL
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        await admin.close()


async def bench_engine(
    engine_name: str, levels: list[int], ops: int, repeat: int, directory: Path
) -> list[Result]:
    async with _database(engine_name, directory) as url:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            store = AccountStore(engine)
            account = await store.create_account("bench")
            await store.credit("bench", CREDIT_NANO)
            async with Ledger(engine).running() as ledger:
                await _round(ledger, account.id, engine_name, 8, 400)  # warm-up: pools, caches
                best: dict[tuple[int, str], Result] = {}
                for _ in range(repeat):
                    for concurrency in levels:
                        for result in await _round(
                            ledger, account.id, engine_name, concurrency, ops
                        ):
                            key = (concurrency, result.op)
                            if key not in best or result.cpu_us < best[key].cpu_us:
                                best[key] = result
                return [best[(c, op)] for c in levels for op in ("hold", "settle")]
        finally:
            await engine.dispose()


def _table(results: list[Result]) -> str:
    lines = [
        "| engine | c | op | ops | ops/s | µs CPU / op | writes / transaction |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.engine} | {r.concurrency} | {r.op} | {r.ops} | {r.per_s:,.0f} | {r.cpu_us:,.1f} "
        f"| {r.batch:.1f} |"
        for r in results
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--ops", type=int, default=3000, help="holds (and settles) per round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best CPU one is kept")
    parser.add_argument("--pin", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--no-uvloop", action="store_true", help="the stdlib event loop")
    args = parser.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if not args.no_uvloop:  # what `teegate serve` runs on (uvicorn picks uvloop)
        import uvloop

        loop_factory = uvloop.new_event_loop
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="teegate-ledger-bench-") as tmp:
        for name in engines:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                results += runner.run(
                    bench_engine(name, args.concurrency, args.ops, args.repeat, Path(tmp))
                )
    print(_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
