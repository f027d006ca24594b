"""The `teegate` command. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from teegate import auth
from teegate.billing import MoneyError, nano_to_usd, usd_to_nano
from teegate.config import Settings, UpstreamSettings, load_settings
from teegate.errors import ConfigError
from teegate.logs import configure_logging
from teegate.store import AccountStore, StoreConflict, StoreNotFound, create_engine, upgrade

T = TypeVar("T")

app = typer.Typer(
    help="teegate: OpenAI-compatible gateway for confidential inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(help="Accounts and their credit.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys: the secret is shown once, at creation.", no_args_is_help=True
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

out = Console(soft_wrap=True)
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML settings file; TEEGATE_* env vars override it.",
        exists=True,
        dir_okay=False,
        envvar="TEEGATE_CONFIG",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def main() -> None:
    configure_logging()
    app()


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def _with_store(settings: Settings, action: Callable[[AccountStore], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings.resolved_database_url)
        try:
            return await action(AccountStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (StoreConflict, StoreNotFound, MoneyError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def _key_secret(settings: Settings) -> bytes:
    if settings.key_hash_secret is None:
        err.print("[red]error:[/red] key_hash_secret is not set (TEEGATE_KEY_HASH_SECRET)")
        raise typer.Exit(1)
    return settings.key_hash_secret.get_secret_value().encode()


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply schema migrations (safe to run from several replicas at once)."""
    settings = _settings(config)

    async def run() -> None:
        engine = create_engine(settings.resolved_database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    out.print("database is at the newest schema")


@accounts_app.command("create")
def accounts_create(
    name: str,
    credit_usd: Annotated[str | None, typer.Option("--credit-usd", help="Initial credit.")] = None,
    config: ConfigOption = None,
) -> None:
    settings = _settings(config)

    async def run(store: AccountStore) -> None:
        await store.create_account(name)
        if credit_usd is not None:
            await store.credit(name, usd_to_nano(credit_usd), memo="initial credit")

    _with_store(settings, run)
    out.print(f"created account '{name}'")


@accounts_app.command("list")
def accounts_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    settings = _settings(config)
    rows = _with_store(settings, lambda store: store.list_accounts())
    if as_json:
        print(
            json.dumps(
                [
                    {"id": a.id, "name": a.name, "balance_usd": nano_to_usd(a.balance_nano)}
                    for a in rows
                ]
            )
        )
        return
    table = Table("id", "name", "balance (USD)")
    for a in rows:
        table.add_row(str(a.id), a.name, nano_to_usd(a.balance_nano))
    out.print(table)


@accounts_app.command("credit")
def accounts_credit(
    name: str,
    usd: Annotated[str, typer.Option("--usd", help="Amount to add, e.g. 25 or 0.5.")],
    config: ConfigOption = None,
) -> None:
    settings = _settings(config)
    account = _with_store(settings, lambda store: store.credit(name, usd_to_nano(usd)))
    out.print(f"'{name}' balance: {nano_to_usd(account.balance_nano)} USD")


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option("--account", help="Account the key bills to.")],
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute.")] = None,
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "",
    config: ConfigOption = None,
) -> None:
    settings = _settings(config)
    token, key = _with_store(
        settings,
        lambda store: auth.issue_key(
            store,
            account=account,
            prefix=settings.key_prefix,
            secret=_key_secret(settings),
            name=name,
            rpm=rpm,
        ),
    )
    out.print(f"key {key.id} for '{account}'. The secret is shown only now:")
    print(token)


@keys_app.command("list")
def keys_list(
    account: Annotated[str | None, typer.Option("--account")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    settings = _settings(config)
    keys = _with_store(settings, lambda store: store.list_keys(account))
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "id": k.id,
                        "account": k.account_name,
                        "name": k.name,
                        "hint": k.hint,
                        "rpm": k.rpm,
                        "active": k.active,
                    }
                    for k in keys
                ]
            )
        )
        return
    table = Table("id", "account", "name", "key", "rpm", "status")
    for k in keys:
        table.add_row(
            k.id,
            k.account_name,
            k.name,
            k.hint,
            str(k.rpm or settings.default_rpm),
            "active" if k.active else "revoked",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: ConfigOption = None) -> None:
    settings = _settings(config)
    _with_store(settings, lambda store: store.revoke_key(key_id))
    out.print(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(key_id: str, config: ConfigOption = None) -> None:
    """Issue a replacement key and revoke the old one."""
    settings = _settings(config)
    token, key = _with_store(
        settings,
        lambda store: auth.rotate_key(
            store, key_id, prefix=settings.key_prefix, secret=_key_secret(settings)
        ),
    )
    out.print(f"{key_id} revoked; new key {key.id}. The secret is shown only now:")
    print(token)


@app.command("models")
def models(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The catalog exactly as the gate sees it now."""
    from teegate.assurance import UpstreamAssurance
    from teegate.catalog import Catalog, CatalogSync, list_servable
    from teegate.upstream import UpstreamClient

    settings = _settings(config)

    async def run() -> list[dict[str, Any]]:
        clients = [UpstreamClient(u, settings.timeouts) for u in settings.upstreams]
        catalog = Catalog()
        try:
            await CatalogSync(
                catalog, clients, markup=settings.markup, interval_s=settings.catalog_refresh_s
            ).sync_once()
        finally:
            for client in clients:
                await client.aclose()
        return list_servable(catalog, UpstreamAssurance(settings.upstreams))

    data = asyncio.run(run())
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(
        "model", "capabilities", "context", "prompt $/1M", "completion $/1M", "attestation"
    )
    for m in data:
        table.add_row(
            m["id"],
            ",".join(m["capabilities"]),
            str(m["context_length"]),
            m["pricing"]["prompt"],
            m["pricing"]["completion"],
            m["attestation"]["mode"],
        )
    out.print(table)


@app.command("serve")
def serve(
    config: ConfigOption = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1)] = None,
) -> None:
    """Run the gateway (uvicorn with uvloop and httptools)."""
    import uvicorn

    overrides = {"workers": workers} if workers else {}
    settings = _settings(config, **overrides)
    if config is not None:
        os.environ["TEEGATE_CONFIG"] = str(config.resolve())
    if workers:
        os.environ["TEEGATE_WORKERS"] = str(workers)
    uvicorn.run(
        "teegate.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=30,
    )


@app.command("devstack")
def devstack(
    port: Annotated[int, typer.Option("--port")] = 8081,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    fault: Annotated[list[str] | None, typer.Option("--fault", help="Fault to switch on.")] = None,
    chunk_delay_ms: Annotated[float, typer.Option("--chunk-delay-ms", min=0)] = 0.0,
    catalog: Annotated[Path | None, typer.Option("--catalog", exists=True, dir_okay=False)] = None,
    config: ConfigOption = None,
) -> None:
    """Run the simulated confidential upstream alone."""
    from teegate import servers
    from teegate.devstack import FAULTS, DevstackConfig, build_app

    faults = frozenset(fault or ())
    unknown = {f for f in faults if f.split("=", 1)[0] not in FAULTS}
    if unknown:
        err.print(f"[red]error:[/red] unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
        raise typer.Exit(2)
    cfg = DevstackConfig(faults=faults, chunk_delay_s=chunk_delay_ms / 1000)
    if catalog is not None:
        cfg = dataclasses.replace(cfg, catalog_path=catalog)
    out.print(f"devstack (simulated confidential upstream) on http://{host}:{port}/v1")
    servers.run_servers(servers.server(build_app(cfg), host=host, port=port))


@app.command("dev")
def dev(
    port: Annotated[int, typer.Option("--port")] = 8080,
    devstack_port: Annotated[int, typer.Option("--devstack-port")] = 8081,
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path(".teegate"),
    config: ConfigOption = None,
) -> None:
    """The one-command demo: simulated upstream + gateway + a funded demo key."""
    from teegate import servers
    from teegate.app import create_app
    from teegate.devstack import DevstackConfig, build_app

    settings = _settings(config, **_dev_overrides(data_dir, port, devstack_port))
    token = _with_store(settings, lambda store: _prepare_demo(store, settings))
    base_url = f"http://127.0.0.1:{port}/v1"
    _print_demo(base_url, token)
    servers.run_servers(
        servers.server(build_app(DevstackConfig()), host="127.0.0.1", port=devstack_port),
        servers.server(create_app(settings), host="127.0.0.1", port=port),
    )


def _dev_overrides(data_dir: Path, port: int, devstack_port: int) -> dict[str, Any]:
    data_dir.mkdir(parents=True, exist_ok=True)
    secret_file = data_dir / "key-hash-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    upstream = UpstreamSettings(
        name="devstack",
        base_url=f"http://127.0.0.1:{devstack_port}",
        attestation="provider-asserted",
    )
    return {
        "environment": "development",
        "data_dir": data_dir,
        "port": port,
        "key_hash_secret": secret_file.read_text().strip(),
        "upstreams": (upstream,),
    }


async def _prepare_demo(store: AccountStore, settings: Settings) -> str:
    await upgrade(store.engine)
    try:
        await store.create_account("demo")
        await store.credit("demo", usd_to_nano(Decimal(10)), memo="demo credit")
    except StoreConflict:
        pass
    token, _ = await auth.issue_key(
        store,
        account="demo",
        prefix=settings.key_prefix,
        secret=_key_secret(settings),
        name="teegate dev",
    )
    return token


def _print_demo(base_url: str, token: str) -> None:
    out.print(
        "[bold]teegate dev[/bold]: gateway + simulated confidential upstream "
        "(attestation: provider-asserted by the simulator)"
    )
    out.print(f"  base URL : {base_url}")
    out.print(f"  API key  : {token}  (demo account, shown once)")
    out.print("  try it   :")
    print(
        f"curl {base_url}/chat/completions -H 'Authorization: Bearer {token}' "
        '-H \'Content-Type: application/json\' -d \'{"model": "deepseek-ai/DeepSeek-R1-0528-TEE",'
        ' "messages": [{"role": "user", "content": "Hello!"}]}\'',
        flush=True,
    )
