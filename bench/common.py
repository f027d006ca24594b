"""Paths, pins and the request bodies every target is sent."""

from __future__ import annotations

import json
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
TOOLS = ("matplotlib==3.11.2", "py-spy==0.4.3")
APT_PACKAGES = ("nginx-light", "wrk")

# The proxy under test runs alone on CPU 0; the upstream, wrk and the stream
# load generator share CPU 1, so every proxy meets the same conditions.
PROXY_CPU = 0
HARNESS_CPU = 1

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
