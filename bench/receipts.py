"""Micro-benchmark of what a receipt costs per request, on and off the answer's path.

On the path (before the answer's last byte): `Answer.witness` (a receipt id, SHA-256
of the request bytes) and the hashing of each byte written, measured as the time a
real `WholeAnswer` takes to reach its last write with a witness minus without one;
and, for streams, SHA-256 of each SSE write.
Off the path (after the answer is sent and settled): building, canonicalizing
(RFC 8785) and queueing the receipt, and its share of signing its batch (the Merkle
tree over the batch's receipts and one Ed25519 signature), measured per receipt
through `ReceiptService.issue` and a flush per batch of 1, 8 and 32 receipts with an
in-memory store, in CPU time; the signing share alone through `sign_batch`.

    .venv/bin/python -m bench.receipts              # ~10 s
    .venv/bin/python -m bench.receipts --requests 2000

Figures are printed, never asserted (the gate for the on-path p50 is 50 µs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import time
from collections.abc import Awaitable
from decimal import Decimal

import orjson
from tests.support.receipts import MemoryReceiptStore

from teegate.attestation import Verdict, VerdictEvidence
from teegate.billing import Hold, Outcome, Rates, Settlement, cost_nano, settlement_for
from teegate.catalog import Admitted, AttestationStatus, parse_entry
from teegate.chat import ResponseHead, WholeAnswer
from teegate.receipts import (
    ReceiptService,
    Served,
    canonical,
    sign_batch,
)

RATES = Rates(740_000_000, 3_237_500_000)
MODEL = parse_entry(
    {"id": "deepseek-ai/DeepSeek-V3-0324-TEE", "pricing": {"prompt": "0.4", "completion": "1.75"},
     "context_length": 163840, "confidential_compute": True},
    upstream="devstack", markup=Decimal("1.85"),
)  # fmt: skip
VERDICT = Verdict(
    id="verdict-bench",
    upstream="devstack",
    instance_id=None,
    mode="simulated",
    passed=True,
    failed_check=None,
    reason="",
    verified_at_s=1_700_000_000,
    expires_at_s=1_700_000_600,
    tcb_status="UpToDate",
    measurements={"mr_td": "00" * 48, "rtmr0": "11" * 48},
    evidence=VerdictEvidence(nonce=b"n" * 32, report_data_rule="sha256(spki)||nonce",
                             quote=os.urandom(5000), tls_spki_sha256=b"s" * 32),
)  # fmt: skip
ADMITTED = Admitted(
    MODEL,
    AttestationStatus(passed=True, mode="simulated", header="verdict=bench",
                      tls_pin=b"p" * 32, channel="pinned", verdict=VERDICT),
)  # fmt: skip
BATCH_SIZES = (1, 8, 32)
REQUEST = b'{"model":"deepseek-ai/DeepSeek-V3-0324-TEE","messages":[' + b"x" * 1000 + b"]}"
RESPONSE = b'{"choices":[{"message":{"content":"' + b"y" * 2000 + b'"}}]}'


def a_hold(request_id: str) -> Hold:
    return Hold(
        request_id=request_id, account_id=1, key_id="key_1", model=MODEL.id, stream=False,
        rates=RATES, prompt_tokens=300, completion_tokens=500,
        amount_nano=cost_nano(300, 500, RATES), created_ms=0, expires_ms=60_000,
    )  # fmt: skip


class NoSettle:
    """A meter whose settlement is done (None): the send path without the ledger."""

    async def place(self, request: object) -> Hold:
        raise NotImplementedError

    async def settle(self, hold: Hold, outcome: Outcome) -> Settlement | None:
        return None

    def watch(self, hold: Hold, outcome: Outcome) -> None:
        return None


class NullSink:
    def __init__(self) -> None:
        self.last_write_ns = 0

    async def _written(self) -> None:
        self.last_write_ns = time.perf_counter_ns()

    def start(self, length: int | None, head: ResponseHead | None = None) -> Awaitable[None]:
        return asyncio.sleep(0)

    def write(self, body: bytes, more: bool) -> Awaitable[None]:
        return self._written()

    def close(self) -> None:
        return None


async def to_last_byte(service: ReceiptService, witnessed: bool) -> int:
    answer = WholeAnswer(ADMITTED, NoSettle(), a_hold("r"), RESPONSE, Outcome("ok"))
    sink = NullSink()
    began = time.perf_counter_ns()
    if witnessed:
        answer.witness(service, REQUEST)
    await answer.send(sink)
    return sink.last_write_ns - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(requests: int) -> None:
    store = MemoryReceiptStore()
    service = ReceiptService(store, account_secret=b"bench")
    await service.start()
    plain: list[float] = []
    witnessed: list[float] = []
    for _ in range(200):  # warm up
        await to_last_byte(service, True)
        await to_last_byte(service, False)
    for _ in range(requests):
        plain.append(await to_last_byte(service, False) / 1000)
        witnessed.append(await to_last_byte(service, True) / 1000)
    added = statistics.median(witnessed) - statistics.median(plain)
    print(f"whole answer ({len(REQUEST)} B request, {len(RESPONSE)} B answer), to its last byte:")
    for label, values in (("without receipt", plain), ("with receipt   ", witnessed)):
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        print(f"  {label} p50 {p50:6.1f} µs  p99 {p99:6.1f} µs")
    print(f"  added on the answer's path: p50 {added:+.1f} µs (gate: <= 50 µs)")

    chunk = b"data: " + b"z" * 120 + b"\n\n"
    digest = hashlib.sha256()
    began = time.perf_counter_ns()
    for _ in range(requests * 10):
        digest.update(chunk)
    per_write = (time.perf_counter_ns() - began) / (requests * 10) / 1000
    print(f"stream: SHA-256 of one {len(chunk)} B SSE write: {per_write:.2f} µs")

    await off_the_path(service, store, requests)


async def off_the_path(service: ReceiptService, store: MemoryReceiptStore, requests: int) -> None:
    """Per receipt, in CPU time: issuing (build, RFC 8785, queue) and a flush per batch,
    whose signing (Merkle tree and one Ed25519 signature) the batch's receipts share."""
    served = Served(
        receipt_id="rcpt_bench", request_sha256=b"q" * 32, response_sha256=b"r" * 32,
        response_bytes=len(RESPONSE), admitted=ADMITTED,
        settlement=settlement_for(a_hold("r"), status="ok", usage=None, output_bytes=900,
                                  now_ms=1),
        usage=None, policy=None, finished_ms=1,
    )  # fmt: skip
    service.note_verdict(VERDICT)
    await service.flush()
    print("off the path, per receipt: build + RFC 8785 + queue, and a share of its batch's")
    print("signing (Merkle tree + one Ed25519 signature), CPU:")
    for size in BATCH_SIZES:
        batches = max(1, requests // size)
        began_cpu = time.process_time()
        for _ in range(batches):
            for _ in range(size):
                service.issue(served)
            await service.drain()
        per_receipt = (time.process_time() - began_cpu) / (batches * size) * 1e6
        bodies = [canonical(orjson.loads(r.signed)["receipt"]) for r in store.receipts[-size:]]
        store.receipts.clear()
        began_cpu = time.process_time()
        for _ in range(batches):
            sign_batch(service.key, bodies)
        signing = (time.process_time() - began_cpu) / (batches * size) * 1e6
        print(
            f"  batches of {size:2d}: {per_receipt:6.1f} µs per receipt, of which signing "
            f"{signing:5.1f} µs"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    asyncio.run(main(parser.parse_args().requests))
