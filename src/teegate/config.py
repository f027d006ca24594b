"""Settings: a TOML file, overridden by `TEEGATE_*` environment variables.

This is the one module that reads the environment. A bad setting is refused at
start-up with a message naming the field, never discovered on the first request.
Nested fields use `__` in env vars: `TEEGATE_DEFAULTS__MAX_TOKENS=2048`. A
secret may be named by file instead (`key_hash_secret_file`), so a settings file
can be shared without the secret in it.
"""

from __future__ import annotations

import logging
import os
import tomllib
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from teegate.errors import ConfigError

_OVERRIDES: ContextVar[dict[str, Any] | None] = ContextVar("teegate_overrides", default=None)

# What `teegate dev` writes: found by every command run in the demo's directory.
DEV_CONFIG_FILE = Path(".teegate/teegate.toml")
# Secrets that may instead be given as `<name>_file`: a path whose text is the secret.
SECRETS_BY_FILE = ("key_hash_secret",)

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
CHUTES_API_URL = "https://api.chutes.ai"
NRAS_GPU_ATTEST_URL = "https://nras.attestation.nvidia.com/v3/attest/gpu"
NRAS_JWKS_URL = "https://nras.attestation.nvidia.com/.well-known/jwks.json"
NRAS_ISSUER = "https://nras.attestation.nvidia.com"

AttestationMode = Literal["attested-tls", "chutes", "provider-asserted"]
Environment = Literal["production", "development"]


class UpstreamSettings(BaseModel):
    """One confidential-compute provider the gateway forwards to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base_url: str = Field(pattern=r"^https?://")
    api_key_env: str | None = None
    attestation: AttestationMode = "attested-tls"
    require_gpu: bool | None = None
    # chutes: where per-chute evidence is fetched (with the `api_key_env` key), and,
    # in development only, a PEM CA bundle trusted instead of the system CAs for that
    # API and for this upstream's inference traffic (the devstack's self-signed cert).
    evidence_url: str = Field(default=CHUTES_API_URL, pattern=r"^https?://")
    evidence_ca_file: FilePath | None = None

    @property
    def api_key(self) -> str | None:
        """The key `api_key_env` names, read where it is needed: this module is the one
        reader of the environment, and the key is never part of the settings' values."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @model_validator(mode="after")
    def _check_mode(self) -> UpstreamSettings:
        if self.evidence_ca_file is not None and self.attestation != "chutes":
            raise ValueError(
                "evidence_ca_file: only a 'chutes' upstream fetches evidence over CA-verified TLS"
            )
        return self


class AttestationSettings(BaseModel):
    """What evidence must prove, and where collateral and GPU verdicts come from.

    Production trusts Intel's root and NVIDIA's attestation service only; a dev
    root CA is refused outside development, so test-PKI quotes can never pass
    for hardware.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_tcb_statuses: tuple[str, ...] = ("UpToDate",)
    measurements_file: Path | None = None
    require_gpu: bool = True
    verdict_ttl_s: int = Field(default=600, ge=2)
    refresh_margin_s: int = Field(default=120, ge=1)
    retry_interval_s: int = Field(default=15, ge=1)
    collateral_refresh_s: float = Field(default=4 * 3600, gt=0)
    """How often DCAP collateral (TCB info, QE identity, CRLs) is fetched again and
    every upstream re-attested with it: the bound on how long a TCB status or CRL
    change at Intel goes unnoticed (docs/attestation.md)."""
    report_nonce_per_minute: int = Field(default=6, ge=1)
    """Fresh attestations a key may ask for per minute with its own nonce on
    `GET /v1/attestation/report` (each one is a full attestation, GPU included)."""
    pccs_url: str = Field(default=INTEL_PCS_URL, pattern=r"^https?://")
    nras_attest_url: str = Field(default=NRAS_GPU_ATTEST_URL, pattern=r"^https?://")
    nras_jwks_url: str = Field(default=NRAS_JWKS_URL, pattern=r"^https?://")
    nras_issuer: str = NRAS_ISSUER
    dev_root_ca_file: Path | None = None


class RequestDefaults(BaseModel):
    """What a chat request gets when it leaves a sampling field out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=1024, ge=1)
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)


class Timeouts(BaseModel):
    """Every outbound call is bounded; reads by the longest silence, so streams may run long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_s: float = Field(default=5.0, gt=0)
    read_s: float = Field(default=120.0, gt=0)
    catalog_s: float = Field(default=10.0, gt=0)


class HttpLimits(BaseModel):
    """What one client may make `teegate serve` hold: enforced by the server itself, so a
    gateway without a proxy in front is not frozen by huge headers or slow clients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_target_bytes: int = Field(default=8192, ge=256)
    """The request target (path and query): past it, 414."""
    max_header_bytes: int = Field(default=32768, ge=1024)
    """All header names and values together: past it, 431."""
    max_headers: int = Field(default=100, ge=8)
    """Header lines: past it, 431."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """From a request's first byte (or the connection's opening) to its last header:
    past it the connection is answered 408 and closed (slowloris)."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """To read a whole request body: past it, 408."""
    max_connections: int = Field(default=4096, ge=1)
    """Open connections per process: a new request past it is answered 503."""


class StripeSettings(BaseModel):
    """Top-ups through Stripe Checkout. Off until both secrets are set: the billing
    page then says how to get credit instead of offering a payment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    """The endpoint's signing secret (whsec_...): only events it signs post credit."""
    api_base: str | None = Field(default=None, pattern=r"^https?://")
    """Another Stripe API address (a local fake in tests); None: Stripe's own."""
    min_top_up_usd: Decimal = Field(default=Decimal(5), gt=0)
    max_top_up_usd: Decimal = Field(default=Decimal(1000), gt=0)

    @property
    def configured(self) -> bool:
        return self.secret_key is not None and self.webhook_secret is not None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TEEGATE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    environment: Environment = "production"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    replicas: int = Field(default=1, ge=1)
    data_dir: Path = Path(".teegate")
    database_url: str | None = None
    redis_url: str | None = None
    # Past this a Redis call counts as failed and the limiter degrades to its bounded
    # local limit: a request never waits long on the limiter.
    redis_timeout_s: float = Field(default=0.25, gt=0)
    upstreams: tuple[UpstreamSettings, ...] = ()
    markup: Decimal = Field(default=Decimal("1.85"), gt=0)
    defaults: RequestDefaults = RequestDefaults()
    attestation: AttestationSettings = AttestationSettings()
    timeouts: Timeouts = Timeouts()
    key_prefix: str = Field(default="vgpu_sk_", pattern=r"^[A-Za-z0-9_]{1,16}$")
    key_hash_secret: SecretStr | None = None
    key_hash_secret_file: Path | None = None  # read into key_hash_secret (see _SecretFiles)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    catalog_refresh_s: float = Field(default=60.0, gt=0)
    default_rpm: int = Field(default=1000, ge=1)
    upstream_pool_size: int = Field(default=256, ge=1)
    # Billing: a hold's lease. The process running its request renews it every
    # quarter of this; a hold not renewed this long (its gateway died) is settled by
    # the reaper from its last progress checkpoint, at start-up and every interval.
    hold_ttl_s: float = Field(default=300.0, gt=0)
    reaper_interval_s: float = Field(default=30.0, gt=0)
    # The database: pooled connections per process, and how long a request waits for a
    # free one, for one statement and for a connect before it is refused with 503.
    database_pool_size: int = Field(default=10, ge=1)
    database_pool_timeout_s: float = Field(default=5.0, gt=0)
    database_statement_timeout_s: float = Field(default=15.0, gt=0)
    database_connect_timeout_s: float = Field(default=5.0, gt=0)
    http: HttpLimits = HttpLimits()
    # Where the gateway asks the TDX module for its own quote (Linux configfs-tsm), for
    # GET /v1/attestation/gateway; absent outside a TDX guest (the endpoint says so).
    tsm_report_dir: Path = Path("/sys/kernel/config/tsm/report")
    # Operators: the admin API (/admin/v1), /metrics and /readyz's per-check report take
    # `Authorization: Bearer <admin token>`; only its SHA-256 (hex) is kept here
    # (`teegate admin-token` makes a token and prints both once). Unset, /admin/v1
    # answers 404. A scrape-only token may open /metrics and /readyz's report as well.
    admin_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    metrics_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # OpenTelemetry traces, off unless an OTLP/HTTP endpoint is set (e.g.
    # http://collector:4318/v1/traces): spans carry ids, models, statuses and counts only.
    otel_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    otel_service_name: str = Field(default="teegate", min_length=1)
    # End-to-end encryption: on, a chat request that is not EHBP-encrypted to the
    # model's attested enclave is refused (400 e2ee_required) before anything else.
    require_e2ee: bool = False
    # The gateway's own log level (`teegate serve`, `teegate dev`); logs never carry
    # content. "debug" also routes the libraries' stdlib logs (uvicorn, aiohttp,
    # SQLAlchemy) to stderr: the confidentiality canary suite runs at it to prove
    # nothing leaks there.
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def logging_level(self) -> int:
        return int(getattr(logging, self.log_level.upper()))

    # The dashboard: where invite links point (None: http://host:port), how long a
    # browser session lasts, sign-in attempts allowed per minute per email and per
    # client address, and how long an invite link stays valid.
    public_url: str | None = Field(default=None, pattern=r"^https?://")
    dashboard_session_ttl_s: float = Field(default=12 * 3600.0, gt=0)
    sign_in_per_minute: int = Field(default=10, ge=1)
    invite_ttl_s: float = Field(default=7 * 86400.0, gt=0)
    stripe: StripeSettings = StripeSettings()

    @model_validator(mode="after")
    def _check_deployment(self) -> Settings:
        if self.environment == "production" and self.key_hash_secret is None:
            raise ValueError(
                "key_hash_secret: required in production (set TEEGATE_KEY_HASH_SECRET "
                "or key_hash_secret_file); "
                "API keys are stored as keyed hashes under it"
            )
        if self.workers * self.replicas > 1 and self.redis_url is None:
            raise ValueError(
                "workers/replicas: more than one gateway process needs redis_url, otherwise "
                "each process would enforce its own rate limit and multiply it"
            )
        if self.environment == "production" and self.attestation.dev_root_ca_file is not None:
            raise ValueError(
                "attestation.dev_root_ca_file: a dev root CA is refused in production; "
                "quotes must chain to Intel's root"
            )
        for upstream in self.upstreams:
            if self.environment == "production" and upstream.evidence_ca_file is not None:
                raise ValueError(
                    f"upstreams.{upstream.name}.evidence_ca_file: refused in production; "
                    "the Chutes API and its inference traffic are verified against system CAs"
                )
        names = [u.name for u in self.upstreams]
        if len(names) != len(set(names)):
            raise ValueError("upstreams: names must be unique")
        return self

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'teegate.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit overrides (command-line flags) beat the environment, which
        # beats the file; the file's values arrive as init values.
        overrides = InitSettingsSource(settings_cls, init_kwargs=_OVERRIDES.get() or {})
        return tuple(_SecretFiles(s) for s in (overrides, env_settings, init_settings))


class _SecretFiles(PydanticBaseSettingsSource):
    """One source with each `<secret>_file` it names read into `<secret>`: a secret
    kept in a file ranks as the source that named the file, and a source giving the
    secret itself clears a file named by a weaker one, so the two never disagree."""

    def __init__(self, source: PydanticBaseSettingsSource) -> None:
        super().__init__(source.settings_cls)
        self._source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = dict(self._source())
        for name in SECRETS_BY_FILE:
            file = values.get(f"{name}_file")
            if file is None:
                if values.get(name) is not None:
                    values[f"{name}_file"] = None
                continue
            if values.get(name) is not None:
                raise ConfigError(f"{name} and {name}_file: set one of them, not both")
            values[name] = _read_secret(f"{name}_file", Path(str(file)))
        return values


def _read_secret(field: str, path: Path) -> str:
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(f"{field}: {path} is empty")
    return secret


def find_config_file(named: Path | None) -> Path | None:
    """The settings file a command runs with: the one named (`--config`), else
    `TEEGATE_CONFIG`, else the one `teegate dev` wrote here, if any."""
    if named is not None:
        return named
    if os.environ.get("TEEGATE_CONFIG"):
        return Path(os.environ["TEEGATE_CONFIG"])
    return DEV_CONFIG_FILE if DEV_CONFIG_FILE.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from a TOML file, the environment and explicit overrides.

    Without a file argument, `TEEGATE_CONFIG` may name one (that is how each
    `teegate serve` worker finds the file its parent was given).
    """
    values: dict[str, Any] = {}
    if config_file is None and os.environ.get("TEEGATE_CONFIG"):
        config_file = Path(os.environ["TEEGATE_CONFIG"])
    if config_file is not None:
        try:
            values = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from exc
    token = _OVERRIDES.set(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc
    finally:
        _OVERRIDES.reset(token)


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "config"
        lines.append(f"{field}: {error['msg']}")
    return "invalid configuration: " + "; ".join(lines)
