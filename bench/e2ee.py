"""End-to-end encryption's overhead against plain, per request and per chunk.

Starts `teegate dev` (real processes: gateway, simulated enclave with EHBP keys,
attestation services) in a temporary directory, then times, one request at a time
so latency is not queueing:

- whole completions, plain (the official SDK) and encrypted (`teegate.client`, so
  tinfoil-ehbp's transport): median and p90 latency, and the median difference;
- streams, the same way: the median difference divided by the chunks per stream;
- the crypto alone per chunk: the enclave sealing one SSE event (AES-256-GCM frame)
  plus the client's frame decryptor opening it, and the request's HPKE setup
  (client seal + enclave open), in a tight loop.

    .venv/bin/python -m bench.e2ee [--requests 40]

Figures go to stdout as a Markdown table; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
from ehbp import ServerIdentity
from openai.types.chat import ChatCompletionMessageParam

import teegate.client
from teegate.client import VerifyPolicy
from teegate.devstack import SimulatedEnclave

MODEL = "deepseek-ai/DeepSeek-V3-0324-TEE"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Explain quantum computing"}
]
EVENT = (
    b'data: {"id":"chatcmpl-0123456789","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"deepseek-ai/DeepSeek-V3-0324-TEE","choices":[{"index":0,"delta":'
    b'{"content":" word"},"finish_reason":null}]}\n\n'
)


@contextlib.contextmanager
def running_dev() -> Iterator[tuple[str, str, Path]]:
    teegate = str(Path(sys.executable).with_name("teegate"))
    with tempfile.TemporaryDirectory(prefix="teegate-e2ee-bench-") as directory:
        ports = [str(p) for p in _free_ports(3)]
        proc = subprocess.Popen(
            [
                teegate,
                "dev",
                "--port",
                ports[0],
                "--devstack-port",
                ports[1],
                "--services-port",
                ports[2],
            ],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if match := re.search(r"API key\s*:\s*(\S+)", line):
                    key = match[1]
                    break
            else:
                raise SystemExit("teegate dev ended without printing a key")
            root = Path(directory) / ".teegate" / "devstack-tls" / "root-ca.der"
            yield f"http://127.0.0.1:{ports[0]}/v1", key, root
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _free_ports(n: int) -> list[int]:
    import socket

    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def timed(call: Callable[[], object], n: int) -> list[float]:
    call()  # warm: connections, caches
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def crypto_per_chunk(n: int) -> tuple[float, float]:
    """µs per chunk (seal + open) and per request (HPKE seal + open of a 200-byte body)."""
    enclave = SimulatedEnclave(e2ee=True).e2ee
    assert enclave is not None
    identity = ServerIdentity.unmarshal_public_config(enclave.keys.hpke_key_config)
    body = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * 150 + b'"}]}'
    start = time.perf_counter()
    for _ in range(n // 10):
        sealed = identity.encrypt_request_body(body)
        assert sealed is not None
        enclave.open(sealed.encapsulated_key, sealed.body, swapped=False)
    per_request = (time.perf_counter() - start) / (n // 10)
    sealed = identity.encrypt_request_body(body)
    assert sealed is not None
    _, secret = enclave.open(sealed.encapsulated_key, sealed.body, swapped=False)
    sealer = enclave.sealer(secret, sealed.encapsulated_key)
    decryptor = sealed.token.create_response_decryptor(sealer.nonce)
    start = time.perf_counter()
    for _ in range(n):
        decryptor.push(sealer.seal(EVENT))
    per_chunk = (time.perf_counter() - start) / n
    return per_chunk * 1e6, per_request * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    n = args.requests
    with running_dev() as (base_url, key, root):
        plain = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        sealed = teegate.client.connect(
            base_url, key, model=MODEL, policy=VerifyPolicy(root_ca_der=root.read_bytes())
        )

        def whole(client: openai.OpenAI) -> Callable[[], object]:
            return lambda: client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=64
            )

        def stream(client: openai.OpenAI) -> Callable[[], object]:
            return lambda: list(
                client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=64, stream=True
                )
            )

        chunks = len(
            list(
                plain.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=64, stream=True
                )
            )
        )
        rows = []
        for name, make in (("whole", whole), ("stream", stream)):
            p = timed(make(plain), n)
            e = timed(make(sealed), n)
            rows.append((name, p, e))
    per_chunk_us, per_request_us = crypto_per_chunk(20_000)
    print(f"{n} sequential requests each; {chunks} chunks per stream; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end\n")  # fmt: skip
    print("| request | plain p50 | E2EE p50 | plain p90 | E2EE p90 | E2EE - plain (p50) |")
    print("|---|---|---|---|---|---|")
    for name, p, e in rows:
        delta = statistics.median(e) - statistics.median(p)
        print(
            f"| {name} | {ms(p, 0.5):.2f} ms | {ms(e, 0.5):.2f} ms | {ms(p, 0.9):.2f} ms | "
            f"{ms(e, 0.9):.2f} ms | {1000 * delta:+.2f} ms"
            + (f" ({1e6 * delta / chunks:+.0f} µs/chunk)" if name == "stream" else "")
            + " |"
        )
    print(f"\nCrypto alone: {per_chunk_us:.1f} µs per chunk (enclave seal + client open), "
          f"{per_request_us:.0f} µs per request (HPKE: client seal + enclave open).")  # fmt: skip


if __name__ == "__main__":
    main()
