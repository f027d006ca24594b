"""The npm SDK tests under tests/ts, run with Node.js's own test runner."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TS_DIR = Path(__file__).parents[1] / "ts"


def run_node_tests(script: str, base_url: str, api_key: str, **env: str) -> str:
    """`node --test SCRIPT` in tests/ts against `base_url` (…/v1) with `api_key`, plus
    `env`; its output, once every test in it passed."""
    node = shutil.which("node")
    if node is None or not (TS_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("node and tests/ts/node_modules are required: run `npm ci --prefix tests/ts`")
    result = subprocess.run(
        [node, "--test", script],
        cwd=TS_DIR,
        env={**os.environ, "TEEGATE_BASE_URL": base_url, "TEEGATE_API_KEY": api_key, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
