"""The servers of one run: upstreams (nginx, devstack) and proxies (bare, LiteLLM, Portkey,
teegate)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.common import (
    ALL_CPUS,
    CATALOG_JSON,
    DEV_ROOT_CA,
    ENCLAVE_CERT,
    ENCLAVE_KEY,
    FIXED_COMPLETION,
    FIXED_EMBEDDINGS,
    HARNESS_CPU,
    HOST,
    MODEL,
    PG_ADMIN_DSN,
    PG_BENCH_DB,
    PG_URL,
    PROJECT_PYTHON,
    PROXY_CPU,
    REPO,
    TEEGATE,
    WORK,
    log,
)
from teegate.devstack import SimulatedAttestationServices

KEY_HASH_SECRET = "bench-key-hash-secret"
VERDICT_MODES = {"attested-tls": "simulated", "provider-asserted": "provider-asserted"}
"""The verdict mode teegate must show per attestation mode: "simulated" is a TDX
quote verified by dcap-qvl against the devstack's dev root CA, not Intel's."""
LITELLM_MASTER_KEY = "sk-bench-" + "0" * 32
"""LiteLLM refuses to start without one; no database, so requests authenticate against it."""


# --- upstreams ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Enclave:
    """A devstack enclave as the other processes see it: its TLS files and services."""

    tls_dir: Path
    services_url: str
    """The Intel PCS and NVIDIA NRAS stand-ins (plain HTTP, as in `teegate dev`)."""

    @property
    def cert_file(self) -> Path:
        """The enclave's self-signed certificate: what nginx serves, and the CA file
        the bare proxy, LiteLLM and the load generators verify the upstream with."""
        return self.tls_dir / ENCLAVE_CERT

    @property
    def key_file(self) -> Path:
        return self.tls_dir / ENCLAVE_KEY

    @property
    def root_ca_file(self) -> Path:
        """The dev root CA of the enclave's test DCAP PKI: what teegate verifies quotes with."""
        return self.tls_dir / DEV_ROOT_CA


@dataclass(frozen=True)
class Upstream:
    """An upstream server presenting an enclave's certificate (https://)."""

    server: procs.Server
    enclave: Enclave

    @property
    def url(self) -> str:
        return self.server.url


def devstack(name: str, chunk_delay_ms: float, completion_tokens: int) -> Upstream:
    """A fresh enclave (`bench/devstack_server.py`): https upstream, evidence, services."""
    tls_dir = WORK / "tls" / name
    shutil.rmtree(tls_dir, ignore_errors=True)  # readiness must see this run's certificate
    port, services_port = procs.free_ports(2)
    enclave = Enclave(tls_dir, f"http://{HOST}:{services_port}")
    argv = [
        str(PROJECT_PYTHON),
        "-m",
        "bench.devstack_server",
        "--port",
        str(port),
        "--services-port",
        str(services_port),
        "--tls-dir",
        str(tls_dir),
        "--chunk-delay-ms",
        str(chunk_delay_ms),
        "--completion-tokens",
        str(completion_tokens),
    ]
    server = procs.start(
        f"devstack-{name}",
        argv,
        port=port,
        cpu=HARNESS_CPU,
        ready_path="/v1/models",
        env={"PYTHONPATH": str(REPO)},
        ca_file=enclave.cert_file,
    )
    try:
        procs.wait_ready(server, f"{enclave.services_url}/.well-known/jwks.json")
    except BaseException:
        server.stop()
        raise
    return Upstream(server, enclave)


def nginx(nginx_bin: str, behind: Upstream) -> Upstream:
    """nginx over TLS with the enclave's own certificate and key, answering a fixed
    chat.completion (with usage), fixed embeddings and the devstack catalog; the
    evidence path goes to the enclave behind it, so the quote it relays binds the key
    nginx presents."""
    prefix = WORK / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    answer = json.dumps(FIXED_COMPLETION, separators=(",", ":"))
    if any(c in answer for c in "'$\\"):
        raise ValueError("the fixed answer must not hold ', $ or \\ (nginx string rules)")
    embeddings = prefix / "embeddings.json"  # 44 KB: past what an nginx string may hold
    embeddings.write_text(json.dumps(FIXED_EMBEDDINGS, separators=(",", ":")))
    user = "user root root;\n" if os.geteuid() == 0 else ""
    enclave = behind.enclave
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_buffer_size 64k;
  client_body_temp_path {prefix}/tmp;
  server {{
    listen {HOST}:{port} ssl backlog=4096;
    ssl_certificate {enclave.cert_file};
    ssl_certificate_key {enclave.key_file};
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 '{answer}';
    }}
    location = /v1/embeddings {{
      default_type application/json;
      alias {embeddings};
      error_page 405 =200 $uri;
    }}
    location = /v1/models {{
      default_type application/json;
      alias {CATALOG_JSON};
    }}
    location = /v1/attestation/report {{
      proxy_pass {behind.url};
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {enclave.cert_file};
      proxy_ssl_name localhost;
    }}
    location / {{ return 404; }}
  }}
}}
"""
    )
    server = procs.start(
        "nginx",
        [nginx_bin, "-p", str(prefix), "-c", str(conf)],
        port=port,
        cpu=HARNESS_CPU,
        ready_path="/v1/models",
        ca_file=enclave.cert_file,
    )
    return Upstream(server, enclave)


# --- proxies -------------------------------------------------------------------------------


def bare(upstream: Upstream) -> procs.Server:
    port = procs.free_port()
    argv = [
        str(PROJECT_PYTHON),
        "-m",
        "bench.bare_proxy",
        "--port",
        str(port),
        "--upstream",
        upstream.url,
        "--ca-file",
        str(upstream.enclave.cert_file),
    ]
    return procs.start(
        "bare",
        argv,
        port=port,
        cpu=PROXY_CPU,
        ready_path="/healthz",
        env={"PYTHONPATH": str(REPO)},
    )


def litellm(litellm_bin: Path, upstream: Upstream) -> procs.Server:
    """LiteLLM proxy, one model, no database, one worker. JSON is valid YAML.

    It verifies the upstream with the enclave's certificate as its CA bundle, set
    both ways LiteLLM documents (`ssl_verify` and `SSL_CERT_FILE`, which wins)."""
    port = procs.free_port()
    ca_file = str(upstream.enclave.cert_file)
    config = WORK / "litellm-config.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"{upstream.url}/v1",
                            "api_key": "bench-upstream-key",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False, "ssl_verify": ca_file},
                "general_settings": {"master_key": LITELLM_MASTER_KEY},
            },
            indent=2,
        )
    )
    argv = [
        str(litellm_bin),
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "SSL_CERT_FILE": ca_file,
    }
    return procs.start(
        "litellm",
        argv,
        port=port,
        cpu=PROXY_CPU,
        ready_path="/health/liveliness",
        env=env,
        ready_timeout_s=240,
    )


PORTKEY_UPSTREAM_KEY = "bench-upstream-key"
"""Portkey forwards the client's bearer token to the upstream as its API key."""


def portkey(start_script: Path, upstream: Upstream) -> procs.Server:
    """Portkey's AI Gateway (Node), one process. It has no config file: every request
    names the provider and the upstream (`x-portkey-provider: openai`,
    `x-portkey-custom-host: <upstream>/v1`), which the server hands its clients.

    Node verifies the upstream with the enclave's certificate as an extra CA
    (`NODE_EXTRA_CA_CERTS`). Its launcher takes a port only: it listens on every
    interface, not 127.0.0.1 alone."""
    port = procs.free_port()
    server = procs.start(
        "portkey",
        ["node", str(start_script), f"--port={port}", "--headless"],
        port=port,
        cpu=PROXY_CPU,
        ready_path="/",
        env={
            "NODE_EXTRA_CA_CERTS": str(upstream.enclave.cert_file),
            "NODE_ENV": "production",
        },
    )
    server.client_headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"{upstream.url}/v1",
    }
    return server


# --- teegate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeegateStore:
    """A database prepared for teegate: schema, a funded account and a high-rpm key."""

    name: str  # "sqlite" | "postgres"
    database_url: str
    key: str


def teegate_config(
    store_name: str,
    database_url: str,
    port: int,
    upstream: Upstream | None = None,
    attestation: str = "attested-tls",
    *,
    workers: int = 1,
    redis_url: str | None = None,
    connections: int = 4096,
) -> Path:
    """The TOML teegate runs with; without an upstream, enough for the store commands.

    `connections` sizes both the upstream pool and the per-process connection cap
    (`[http] max_connections`, with room for the probes), so the open-stream phase can
    hold that many streams; more than one worker needs `redis_url` (the shared limiter).

    attested-tls is verified as `teegate dev` does it: quotes against the enclave's
    dev root CA (allowed in development only), collateral from its PCS stand-in, GPU
    evidence through its NRAS stand-in."""
    path = WORK / f"teegate-{store_name}.toml"
    text = f"""# generated by bench/targets.py
environment = "development"
host = "{HOST}"
port = {port}
workers = {workers}
data_dir = "{WORK / "teegate-data"}"
database_url = "{database_url}"
key_hash_secret = "{KEY_HASH_SECRET}"
upstream_pool_size = {connections}
catalog_refresh_s = 60
"""
    if redis_url is not None:
        text += f'redis_url = "{redis_url}"\n'
    text += f"\n[http]\nmax_connections = {connections + 64}\n"
    if upstream is not None:
        text += _upstream_toml(upstream, attestation)
    path.write_text(text)
    return path


def _upstream_toml(upstream: Upstream, attestation: str) -> str:
    text = f"""
[[upstreams]]
name = "bench"
base_url = "{upstream.url}"
attestation = "{attestation}"
"""
    if attestation != "attested-tls":
        return text
    services = upstream.enclave.services_url
    return (
        text
        + f"""
[attestation]
pccs_url = "{services}"
nras_attest_url = "{services}/v3/attest/gpu"
nras_jwks_url = "{services}/.well-known/jwks.json"
nras_issuer = "{SimulatedAttestationServices.issuer}"
dev_root_ca_file = "{upstream.enclave.root_ca_file}"
"""
    )


def _teegate_cli(config: Path, *args: str) -> str:
    done = subprocess.run(
        [str(TEEGATE), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"teegate {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_store(store_name: str) -> TeegateStore:
    """A fresh database: migrations, account `bench` with credit, a key with a high rpm."""
    if store_name == "sqlite":
        db = WORK / "teegate-data" / "bench.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{db}"
    else:
        asyncio.run(_recreate_postgres_database())
        url = PG_URL
    config = teegate_config(store_name, url, 0)
    _teegate_cli(config, "db", "upgrade")
    _teegate_cli(config, "accounts", "create", "bench", "--credit-usd", "1000000")
    out = _teegate_cli(config, "keys", "create", "--account", "bench", "--rpm", "100000000")
    key = [line for line in out.splitlines() if line.strip()][-1].strip()
    log(f"teegate store {store_name}: schema, account 'bench' and a key ready")
    return TeegateStore(store_name, url, key)


async def _recreate_postgres_database() -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    finally:
        await conn.close()


def postgres_available() -> bool:
    async def probe() -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception:  # any failure means: no PostgreSQL for this run
        return False
    return True


def redis_available(url: str) -> bool:
    async def probe() -> None:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=3)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(probe())
    except Exception:  # any failure means: no Redis for this run
        return False
    return True


def teegate(
    store: TeegateStore,
    upstream: Upstream,
    attestation: str,
    *,
    workers: int = 1,
    redis_url: str | None = None,
    connections: int = 4096,
) -> procs.Server:
    """teegate on CPU 0 (both cores with more than one worker), ready (attested) and
    serving the model in the expected mode.

    In provider-asserted mode its CA-verified upstream connections trust the
    enclave's certificate through `SSL_CERT_FILE`; attested-tls needs no CA at all:
    the quote vouches for the key and every connection is pinned to it."""
    port = procs.free_port()
    config = teegate_config(
        store.name,
        store.database_url,
        port,
        upstream,
        attestation,
        workers=workers,
        redis_url=redis_url,
        connections=connections,
    )
    env = (
        {} if attestation == "attested-tls" else {"SSL_CERT_FILE": str(upstream.enclave.cert_file)}
    )
    server = procs.start(
        f"teegate-{store.name}" + (f"-{workers}w" if workers > 1 else ""),
        [str(TEEGATE), "serve", "--config", str(config)],
        port=port,
        cpu=PROXY_CPU if workers == 1 else ALL_CPUS,
        ready_path="/readyz",
        env=env,
    )
    try:
        _check_attestation(server, store.key, attestation)
    except BaseException:
        server.stop()
        raise
    return server


def _check_attestation(server: procs.Server, key: str, attestation: str) -> None:
    """Stop the run if teegate does not serve the model in the mode asked for: a
    misconfigured verifier must fail the bench, not fall back and pass quietly."""
    expected = VERDICT_MODES[attestation]
    request = urllib.request.Request(
        f"{server.url}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        verdict = json.load(response).get("attestation") or {}
    if verdict.get("mode") != expected or verdict.get("status") != "verified":
        raise RuntimeError(f"teegate serves {MODEL} with attestation {verdict}, not {expected}")
    log(f"teegate attestation: {MODEL} {verdict['status']}, mode {verdict['mode']}")
