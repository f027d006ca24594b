"""The npm `openai` package (TypeScript SDK) against the gateway: chat and stream."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.gateway import Gateway

TS_DIR = Path(__file__).with_name("ts")


def test_typescript_sdk_chat_and_stream(gateway: Gateway) -> None:
    node = shutil.which("node")
    if node is None or not (TS_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("node and tests/ts/node_modules are required: run `npm ci --prefix tests/ts`")
    env = {**os.environ, "TEEGATE_BASE_URL": f"{gateway.url}/v1", "TEEGATE_API_KEY": gateway.key}
    result = subprocess.run(
        [node, "--test", "chat.test.mjs"],
        cwd=TS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 3" in result.stdout
    assert "# fail 0" in result.stdout
