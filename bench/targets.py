"""The servers of one run: upstreams (nginx, devstack) and proxies (bare, LiteLLM, teegate)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.common import (
    CATALOG_JSON,
    FIXED_COMPLETION,
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

KEY_HASH_SECRET = "bench-key-hash-secret"
LITELLM_MASTER_KEY = "sk-bench-" + "0" * 32
"""LiteLLM refuses to start without one; no database, so requests authenticate against it."""


# --- upstreams ---------------------------------------------------------------------------


def nginx(nginx_bin: str) -> procs.Server:
    """nginx answering a fixed chat.completion (with usage) and the devstack catalog."""
    prefix = WORK / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    answer = json.dumps(FIXED_COMPLETION, separators=(",", ":"))
    if any(c in answer for c in "'$\\"):
        raise ValueError("the fixed answer must not hold ', $ or \\ (nginx string rules)")
    user = "user root root;\n" if os.geteuid() == 0 else ""
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
    listen {HOST}:{port} backlog=4096;
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 '{answer}';
    }}
    location = /v1/models {{
      default_type application/json;
      alias {CATALOG_JSON};
    }}
    location / {{ return 404; }}
  }}
}}
"""
    )
    return procs.start(
        "nginx",
        [nginx_bin, "-p", str(prefix), "-c", str(conf)],
        port=port,
        cpu=HARNESS_CPU,
        ready_path="/v1/models",
    )


def devstack(chunk_delay_ms: float, completion_tokens: int) -> procs.Server:
    port = procs.free_port()
    argv = [
        str(PROJECT_PYTHON),
        "-m",
        "bench.devstack_server",
        "--port",
        str(port),
        "--chunk-delay-ms",
        str(chunk_delay_ms),
        "--completion-tokens",
        str(completion_tokens),
    ]
    return procs.start(
        "devstack",
        argv,
        port=port,
        cpu=HARNESS_CPU,
        ready_path="/v1/models",
        env={"PYTHONPATH": str(REPO)},
    )


# --- proxies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """A proxy under test: how to reach it, and with which key (if any)."""

    label: str
    server: procs.Server
    auth: str = ""

    @property
    def chat_url(self) -> str:
        return f"{self.server.url}/v1/chat/completions"


def bare(upstream: str) -> procs.Server:
    port = procs.free_port()
    argv = [
        str(PROJECT_PYTHON),
        "-m",
        "bench.bare_proxy",
        "--port",
        str(port),
        "--upstream",
        upstream,
    ]
    return procs.start(
        "bare",
        argv,
        port=port,
        cpu=PROXY_CPU,
        ready_path="/healthz",
        env={"PYTHONPATH": str(REPO)},
    )


def litellm(litellm_bin: Path, upstream: str) -> procs.Server:
    """LiteLLM proxy, one model, no database, one worker. JSON is valid YAML."""
    port = procs.free_port()
    config = WORK / "litellm-config.yaml"
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"{upstream}/v1",
                            "api_key": "bench-upstream-key",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False},
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
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    return procs.start(
        "litellm",
        argv,
        port=port,
        cpu=PROXY_CPU,
        ready_path="/health/liveliness",
        env=env,
        ready_timeout_s=240,
    )


# --- teegate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeegateStore:
    """A database prepared for teegate: schema, a funded account and a high-rpm key."""

    name: str  # "sqlite" | "postgres"
    database_url: str
    key: str


def teegate_config(
    store_name: str, database_url: str, upstream: str, attestation: str, port: int
) -> Path:
    """The TOML teegate runs with. `attestation` is the switch: provider-asserted now,
    attested-tls once the upstream serves attestation evidence."""
    path = WORK / f"teegate-{store_name}.toml"
    path.write_text(
        f"""# generated by bench/targets.py
environment = "development"
host = "{HOST}"
port = {port}
workers = 1
data_dir = "{WORK / "teegate-data"}"
database_url = "{database_url}"
key_hash_secret = "{KEY_HASH_SECRET}"
upstream_pool_size = 4096
catalog_refresh_s = 60

[[upstreams]]
name = "bench"
base_url = "{upstream}"
attestation = "{attestation}"
"""
    )
    return path


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


def prepare_store(store_name: str, attestation: str) -> TeegateStore:
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
    config = teegate_config(store_name, url, "http://127.0.0.1:9", attestation, 0)
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


def teegate(store: TeegateStore, upstream: str, attestation: str) -> procs.Server:
    port = procs.free_port()
    config = teegate_config(store.name, store.database_url, upstream, attestation, port)
    return procs.start(
        f"teegate-{store.name}",
        [str(TEEGATE), "serve", "--config", str(config)],
        port=port,
        cpu=PROXY_CPU,
        ready_path="/readyz",
    )
