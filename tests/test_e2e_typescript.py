"""The npm `openai` package (TypeScript SDK) against the gateway: chat, stream, embeddings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.gateway import EMBEDDING_MODEL, Devstack, Gateway, wait_for

TS_DIR = Path(__file__).with_name("ts")


def run_node_tests(gateway: Gateway, script: str) -> str:
    node = shutil.which("node")
    if node is None or not (TS_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("node and tests/ts/node_modules are required: run `npm ci --prefix tests/ts`")
    env = {**os.environ, "TEEGATE_BASE_URL": f"{gateway.url}/v1", "TEEGATE_API_KEY": gateway.key}
    result = subprocess.run(
        [node, "--test", script],
        cwd=TS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_typescript_sdk_chat_and_stream(gateway: Gateway) -> None:
    output = run_node_tests(gateway, "chat.test.mjs")
    assert "# pass 3" in output
    assert "# fail 0" in output


def test_typescript_sdk_embeddings(embeddings_rig: tuple[Gateway, Devstack]) -> None:
    gateway, upstream = embeddings_rig
    upstream.admin("POST", "reset")
    wait_for(gateway, lambda ids: EMBEDDING_MODEL in ids)
    output = run_node_tests(gateway, "embeddings.test.mjs")
    assert "# pass 3" in output
    assert "# fail 0" in output
    assert upstream.embeddings_requests() == 13  # 4 forms x 3 encodings, then dimensions
