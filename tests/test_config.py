"""config.py: a TOML file overridden by TEEGATE_* env vars; bad values refused by name."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from teegate.config import RequestDefaults, Settings, UpstreamSettings, load_settings
from teegate.errors import ConfigError

DEV = {"environment": "development"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets itself may reach the settings."""
    for name in list(os.environ):
        if name.startswith("TEEGATE_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "teegate.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings(None, **DEV)
    assert settings.port == 8080
    assert settings.workers == 1
    assert settings.markup == Decimal("1.85")
    assert isinstance(settings.markup, Decimal)
    assert settings.defaults == RequestDefaults(max_tokens=1024, temperature=0.7, top_p=1.0)
    assert settings.key_prefix == "vgpu_sk_"
    assert settings.upstreams == ()
    assert settings.resolved_database_url == "sqlite+aiosqlite:///.teegate/teegate.db"


def test_database_url_wins_over_data_dir(tmp_path: Path) -> None:
    assert (
        load_settings(None, **DEV, data_dir=tmp_path).resolved_database_url
        == f"sqlite+aiosqlite:///{tmp_path}/teegate.db"
    )
    url = "postgresql+asyncpg://u@db/teegate"
    assert load_settings(None, **DEV, database_url=url).resolved_database_url == url


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
environment = "development"
port = 9000
markup = 1.1
[defaults]
temperature = 0.5
[[upstreams]]
name = "chutes"
base_url = "https://llm.chutes.ai"
attestation = "chutes"
api_key_env = "CHUTES_API_KEY"
""",
    )
    settings = load_settings(path)
    assert settings.port == 9000
    # A TOML float becomes the Decimal it reads as, not the binary float's expansion.
    assert settings.markup == Decimal("1.1")
    assert settings.defaults.temperature == 0.5
    assert settings.defaults.max_tokens == 1024
    assert settings.upstreams == (
        UpstreamSettings(
            name="chutes",
            base_url="https://llm.chutes.ai",
            attestation="chutes",
            api_key_env="CHUTES_API_KEY",
        ),
    )


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'environment = "development"\nport = 9000\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("TEEGATE_PORT", "7000")
    settings = load_settings(path)
    assert settings.port == 7000
    assert settings.host == "0.0.0.0"  # not in the env: the file's value stands


def test_nested_env_merges_with_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        'environment = "development"\n[defaults]\ntemperature = 0.5\nmax_tokens = 10\n',
    )
    monkeypatch.setenv("TEEGATE_DEFAULTS__MAX_TOKENS", "2048")
    monkeypatch.setenv("TEEGATE_TIMEOUTS__READ_S", "30")
    settings = load_settings(path)
    assert settings.defaults.max_tokens == 2048
    assert settings.defaults.temperature == 0.5
    assert settings.timeouts.read_s == 30.0
    assert settings.timeouts.connect_s == 5.0


def test_env_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEEGATE_ENVIRONMENT", "development")
    monkeypatch.setenv("TEEGATE_MARKUP", "2.5")
    monkeypatch.setenv("TEEGATE_UPSTREAMS", '[{"name": "dev", "base_url": "http://127.0.0.1:1"}]')
    settings = load_settings()
    assert settings.markup == Decimal("2.5")
    assert [u.name for u in settings.upstreams] == ["dev"]
    assert settings.upstreams[0].attestation == "attested-tls"


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'environment = "development"\nport = 9100\n')
    monkeypatch.setenv("TEEGATE_CONFIG", str(path))
    assert load_settings().port == 9100


def test_explicit_arguments_are_applied() -> None:
    settings = load_settings(None, **DEV, port=1234, default_rpm=5)
    assert (settings.port, settings.default_rpm) == (1234, 5)


def test_explicit_arguments_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEEGATE_PORT", "7000")
    assert load_settings(None, **DEV, port=1234).port == 1234


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"port": "abc"}, "port"),
        ({"port": 70000}, "port"),
        ({"workers": 0}, "workers"),
        ({"replicas": 0}, "replicas"),
        ({"markup": "0"}, "markup"),
        ({"markup": "-1"}, "markup"),
        ({"environment": "staging"}, "environment"),
        ({"defaults": {"max_tokens": 0}}, "defaults.max_tokens"),
        ({"defaults": {"temperature": 2.5}}, "defaults.temperature"),
        ({"defaults": {"top_p": 0}}, "defaults.top_p"),
        ({"timeouts": {"read_s": 0}}, "timeouts.read_s"),
        ({"key_prefix": "bad prefix!"}, "key_prefix"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"default_rpm": 0}, "default_rpm"),
        ({"catalog_refresh_s": 0}, "catalog_refresh_s"),
        ({"bogus": 1}, "bogus"),
        ({"defaults": {"bogus": 1}}, "defaults.bogus"),
        ({"upstreams": [{"name": "a", "base_url": "ftp://x"}]}, "upstreams.0.base_url"),
        ({"upstreams": [{"name": "", "base_url": "http://x"}]}, "upstreams.0.name"),
        (
            {"upstreams": [{"name": "a", "base_url": "http://x", "attestation": "trust-me"}]},
            "upstreams.0.attestation",
        ),
        (
            {
                "upstreams": [
                    {"name": "a", "base_url": "http://x"},
                    {"name": "a", "base_url": "http://y"},
                ]
            },
            "upstreams",
        ),
    ],
)
def test_bad_values_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        load_settings(None, **(DEV | values))
    assert f"{field}:" in str(info.value)


def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEEGATE_WORKERS", "many")
    with pytest.raises(ConfigError, match="workers: "):
        load_settings(None, **DEV)


def test_production_requires_key_hash_secret() -> None:
    with pytest.raises(ConfigError, match="key_hash_secret: required in production"):
        load_settings(None)
    with pytest.raises(ConfigError, match="key_hash_secret"):
        load_settings(None, environment="production")
    settings = load_settings(None, key_hash_secret="s3cret-value")
    assert settings.environment == "production"
    assert settings.key_hash_secret is not None
    assert settings.key_hash_secret.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(settings)
    assert "s3cret-value" not in str(settings)


def test_development_needs_no_secret() -> None:
    assert load_settings(None, **DEV).key_hash_secret is None


@pytest.mark.parametrize("scale", [{"workers": 2}, {"replicas": 2}, {"workers": 3, "replicas": 4}])
def test_more_than_one_process_needs_redis(scale: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="needs redis_url") as info:
        load_settings(None, **DEV, **scale)
    assert "workers" in str(info.value)
    settings = load_settings(None, **DEV, **scale, redis_url="redis://127.0.0.1:6379/0")
    assert (settings.workers, settings.replicas) == (
        scale.get("workers", 1),
        scale.get("replicas", 1),
    )


def test_one_process_needs_no_redis() -> None:
    settings = load_settings(None, **DEV, workers=1, replicas=1)
    assert settings.redis_url is None


def test_workers_from_env_need_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEEGATE_WORKERS", "3")
    with pytest.raises(ConfigError, match="redis_url"):
        load_settings(None, **DEV)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=f"config file {missing}"):
        load_settings(missing)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "port = \n")
    with pytest.raises(ConfigError, match="config file"):
        load_settings(path)


def test_bad_value_in_file_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'environment = "development"\n[defaults]\ntop_p = 1.5\n')
    with pytest.raises(ConfigError, match=r"defaults\.top_p: "):
        load_settings(path)


def test_settings_are_frozen() -> None:
    settings = load_settings(None, **DEV)
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]
    assert isinstance(settings, Settings)
