"""Paths, pins and the request bodies every target is sent."""

from __future__ import annotations

import base64
import json
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
LOGS = WORK / "logs"
PROJECT_PYTHON = Path(sys.executable)
TEEGATE = REPO / ".venv" / "bin" / "teegate"
CATALOG_JSON = REPO / "src" / "teegate" / "devstack" / "catalog.json"

LITELLM_VERSION = "1.108.7"
PORTKEY_VERSION = "1.15.2"
"""Portkey's AI Gateway (npm `@portkey-ai/gateway`, Node), the second peer."""
PORTKEY_HONO_NODE_SERVER = "1.13.8"
"""The gateway takes any `@hono/node-server` ^1.3.3. From 1.14 its lightweight Response
keeps a fetched response's immutable Headers, and the gateway's header update then fails
every stream with `TypeError: immutable` (Portkey-AI/gateway issues 1389, 1550); 1.13.8
copies them, so the bench holds the gateway to it."""
TOOLS = ("matplotlib==3.11.2", "py-spy==0.4.3")
APT_PACKAGES = ("nginx-light", "wrk")

# The proxy under test runs alone on CPU 0; the upstream, wrk and the stream
# load generator share CPU 1, so every proxy meets the same conditions.
PROXY_CPU = 0
HARNESS_CPU = 1
ALL_CPUS = f"{PROXY_CPU},{HARNESS_CPU}"
"""Where a proxy with two workers runs (the `--workers2` phase): both cores, sharing
CPU 1 with the harness."""

HOST = "127.0.0.1"

ENCLAVE_CERT = "enclave-cert.pem"
ENCLAVE_KEY = "enclave-key.pem"
DEV_ROOT_CA = "root-ca.der"
ENCLAVE_FILES = (ENCLAVE_CERT, ENCLAVE_KEY, DEV_ROOT_CA)
"""What `teegate.devstack.devstack_servers` writes to its TLS folder: the enclave's
self-signed certificate and key (`SimulatedEnclave.write_tls_files`) and the dev
root CA of its test DCAP PKI."""
MODEL = "deepseek-ai/DeepSeek-V3-0324-TEE"
"""A confidential model of the devstack catalog without reasoning: plain content chunks."""

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BENCH_DB = "teegate_bench"
PG_URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_BENCH_DB}"

STREAM_COMPLETION_TOKENS = 198
"""Role chunk + 198 token chunks + finish chunk = 200 chunks per stream."""

FIXED_COMPLETION = {
    "id": "chatcmpl-bench0000000000000000000000000000",
    "object": "chat.completion",
    "created": 1761955200,
    "model": MODEL,
    "system_fingerprint": "fp_bench",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! This is the fixed answer of the benchmark upstream.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 13,
        "total_tokens": 25,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-0.6B-TEE"
EMBEDDING_INPUTS = 8
EMBEDDING_DIMENSIONS = 1024
_VECTOR = base64.b64encode(
    struct.pack(f"<{EMBEDDING_DIMENSIONS}f", *([EMBEDDING_DIMENSIONS**-0.5] * EMBEDDING_DIMENSIONS))
).decode()
FIXED_EMBEDDINGS = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": i, "embedding": _VECTOR} for i in range(EMBEDDING_INPUTS)
    ],
    "model": EMBEDDING_MODEL,
    "usage": {"prompt_tokens": 8 * EMBEDDING_INPUTS, "total_tokens": 8 * EMBEDDING_INPUTS},
}
"""A RAG batch as the SDKs ask for it: 8 chunks, 1024 dimensions, base64 (44 KB)."""


def embeddings_body() -> bytes:
    chunks = [f"Chunk {i} of a document the benchmark embeds." for i in range(EMBEDDING_INPUTS)]
    body = {"model": EMBEDDING_MODEL, "input": chunks, "encoding_format": "base64"}
    return json.dumps(body, separators=(",", ":")).encode()


def chat_body(*, stream: bool) -> bytes:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 1024,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)
