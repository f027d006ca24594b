"""`teegate accounts create --email` and `accounts invite`: a dashboard login, and a
one-time invite link whose token travels in the fragment only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.cli import cli_config, run

LINK = re.compile(r"(https?://\S+/dashboard/invite)#(\S+)")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return cli_config(tmp_path, monkeypatch, public_url="https://gateway.example")


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
