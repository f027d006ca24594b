"""The `teegate` command run in-process against a settings file of the test's own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from teegate.cli import app
from teegate.config import load_settings
from teegate.settings_file import settings_toml


def cli_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Path:
    """A migrated development database under `tmp_path` and the settings file naming it;
    the caller's TEEGATE_* variables are cleared, so the file alone decides."""
    for name in list(os.environ):
        if name.startswith("TEEGATE_"):
            monkeypatch.delenv(name)
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    loaded = load_settings(
        None,
        environment="development",
        data_dir=tmp_path,
        key_hash_secret_file=secret,
        **settings,
    )
    path = tmp_path / "teegate.toml"
    path.write_text(settings_toml(loaded))
    run(path, "db", "upgrade")
    return path


def run(config: Path, *args: str, code: int = 0) -> str:
    """`teegate ARGS --config CONFIG`: its output, once its exit code is `code`."""
    result = CliRunner().invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == code, result.output
    return result.output
