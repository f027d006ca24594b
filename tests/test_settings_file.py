"""Settings files: secrets named by file, which file a command finds, and the TOML
`teegate dev` writes (read back to the very same settings)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from teegate.config import (
    AttestationSettings,
    StripeSettings,
    UpstreamSettings,
    find_config_file,
    load_settings,
)
from teegate.errors import ConfigError
from teegate.settings_file import dumps, settings_toml

DEV = {"environment": "development"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets itself may reach the settings."""
    for name in list(os.environ):
        if name.startswith("TEEGATE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("from-the-file\n")
    return path


def secret_of(**values: Any) -> str | None:
    secret = load_settings(None, **values).key_hash_secret
    return None if secret is None else secret.get_secret_value()


def test_a_secret_file_is_read_stripped(secret_file: Path) -> None:
    settings = load_settings(None, key_hash_secret_file=secret_file)
    assert settings.environment == "production"  # the file satisfies production's rule
    assert settings.key_hash_secret is not None
    assert settings.key_hash_secret.get_secret_value() == "from-the-file"
    assert settings.key_hash_secret_file == secret_file


def test_a_secret_file_ranks_as_the_source_naming_it(
    secret_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "teegate.toml"
    config.write_text(f'key_hash_secret_file = "{secret_file}"\n')
    monkeypatch.setenv("TEEGATE_KEY_HASH_SECRET", "from-the-env")
    from_env = load_settings(config)  # the environment beats the file that names a file
    assert from_env.key_hash_secret is not None
    assert from_env.key_hash_secret.get_secret_value() == "from-the-env"
    assert from_env.key_hash_secret_file is None  # never a file that was not read
    assert secret_of(key_hash_secret_file=secret_file) == "from-the-file"  # flags beat env
    monkeypatch.delenv("TEEGATE_KEY_HASH_SECRET")
    monkeypatch.setenv("TEEGATE_KEY_HASH_SECRET_FILE", str(secret_file))
    assert secret_of() == "from-the-file"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "key_hash_secret_file: cannot read"), ("\n", "key_hash_secret_file: .* is empty")],
)
def test_an_unusable_secret_file_is_refused_by_name(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(None, key_hash_secret_file=path)


def test_a_secret_and_its_file_from_one_source_are_refused(secret_file: Path) -> None:
    with pytest.raises(ConfigError, match="set one of them, not both"):
        load_settings(None, key_hash_secret="x", key_hash_secret_file=secret_file)


def test_the_settings_file_a_command_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    named, from_env = tmp_path / "named.toml", tmp_path / "env.toml"
    assert find_config_file(None) is None
    (tmp_path / ".teegate").mkdir()
    (tmp_path / ".teegate" / "teegate.toml").write_text("")
    assert find_config_file(None) == Path(".teegate/teegate.toml")
    monkeypatch.setenv("TEEGATE_CONFIG", str(from_env))
    assert find_config_file(None) == from_env
    assert find_config_file(named) == named


def test_dumps_writes_what_tomllib_reads() -> None:
    values: dict[str, Any] = {
        "text": 'quote " backslash \\ newline \n tab \t del \x7f accent é emoji 🙂',
        "flag": True,
        "count": 3,
        "ratio": 0.25,
        "names": ["a", "b"],
        "a key": "quoted",
        "table": {"inner": 1, "nested": {"deep": "yes"}},
        "items": [{"name": "one", "sub": {"x": 1}}, {"name": "two"}],
    }
    assert tomllib.loads(dumps(values | {"left_out": None})) == values


def test_settings_toml_reads_back_as_the_same_settings(secret_file: Path, tmp_path: Path) -> None:
    settings = load_settings(
        None,
        **DEV,
        port=9123,
        data_dir=tmp_path,
        key_hash_secret_file=secret_file,
        upstreams=(
            UpstreamSettings(name="devstack", base_url="https://127.0.0.1:9124"),
            UpstreamSettings(
                name="vendor", base_url="https://vendor.example", attestation="provider-asserted"
            ),
        ),
        attestation=AttestationSettings(
            pccs_url="http://127.0.0.1:9125", nras_issuer="https://nras.example"
        ),
    )
    written = settings_toml(settings)
    assert "from-the-file" not in written
    path = tmp_path / "teegate.toml"
    path.write_text(written)
    again = load_settings(path)
    assert again.model_dump() == settings.model_dump() | {
        "database_url": settings.resolved_database_url
    }
    assert again.key_hash_secret is not None
    assert again.key_hash_secret.get_secret_value() == "from-the-file"


def test_stripe_secrets_are_never_written() -> None:
    settings = load_settings(
        None,
        environment="development",
        key_hash_secret="x",
        stripe=StripeSettings(
            secret_key="sk_test_1", webhook_secret="whsec_1", api_base="http://a"
        ),
    )
    written = settings_toml(settings)
    assert "secret_key" not in written
    assert "webhook_secret" not in written
    assert 'api_base = "http://a"' in written
