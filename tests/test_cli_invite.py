"""`teegate accounts create --email` and `accounts invite`: a dashboard login, and a
one-time invite link whose token travels in the fragment only."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teegate.cli import app
from teegate.config import load_settings
from teegate.settings_file import settings_toml

LINK = re.compile(r"(https?://\S+/dashboard/invite)#(\S+)")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("TEEGATE_"):
            monkeypatch.delenv(name)
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    settings = load_settings(
        None,
        environment="development",
        data_dir=tmp_path,
        key_hash_secret_file=secret,
        public_url="https://gateway.example",
    )
    path = tmp_path / "teegate.toml"
    path.write_text(settings_toml(settings))
    run(path, "db", "upgrade")
    return path


def run(config: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == code, result.output
    return result.output


def test_create_with_an_email_prints_a_fragment_invite_link(config: Path) -> None:
    output = run(config, "accounts", "create", "alice", "--email", "Alice@Example.com")
    found = LINK.search(output)
    assert found is not None, output
    assert found[1] == "https://gateway.example/dashboard/invite"
    assert len(found[2]) >= 43  # 256 random bits, base64url


def test_each_invite_is_a_new_token(config: Path) -> None:
    run(config, "accounts", "create", "bob")
    refused = run(config, "accounts", "invite", "bob", code=1)
    assert "has no dashboard email" in refused
    first = LINK.search(run(config, "accounts", "invite", "bob", "--email", "bob@example.com"))
    second = LINK.search(run(config, "accounts", "invite", "bob"))
    assert first is not None and second is not None
    assert first[2] != second[2]


def test_an_email_belongs_to_one_account(config: Path) -> None:
    run(config, "accounts", "create", "carol", "--email", "team@example.com")
    run(config, "accounts", "create", "dave")
    refused = run(config, "accounts", "invite", "dave", "--email", "TEAM@example.com", code=1)
    assert "belongs to another account" in refused
    assert "not an email" in run(config, "accounts", "invite", "dave", "--email", "nope", code=1)
