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
from teegate.config import AttestationSettings, Settings, UpstreamSettings, load_settings
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


@app.command("usage")
def usage(
    account: Annotated[str | None, typer.Option("--account", help="Only this account.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="From this date (YYYY-MM-DD or ISO 8601; UTC).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 1000,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Metered usage and charges: one record per request, newest first."""
    from teegate.billing import UsageQuery, parse_since
    from teegate.store import Ledger

    settings = _settings(config)
    try:
        since_ms = parse_since(since) if since else None
    except ValueError as exc:
        err.print(f"[red]error:[/red] --since: {exc}")
        raise typer.Exit(2) from exc
    query = UsageQuery(limit=limit, account_name=account, since_ms=since_ms)

    async def run(store: AccountStore) -> Any:
        if account is not None:
            await store.get_account(account)  # an unknown name is an error, not an empty list
        return await Ledger(store.engine).usage(query)

    _print_usage(_with_store(settings, run), as_json)


def _print_usage(records: Any, as_json: bool) -> None:
    from teegate.billing import describe_generation

    if as_json:
        print(json.dumps([{"account": r.account, **describe_generation(r)} for r in records]))
        return
    table = Table(
        "request", "account", "model", "prompt", "completion", "cost (USD)", "settled by",
        "status", "started (UTC)",
    )  # fmt: skip
    for r in records:
        row = describe_generation(r)
        table.add_row(
            r.request_id, r.account, r.model, str(r.prompt_tokens), str(r.completion_tokens),
            row["total_cost"], r.settled_by, r.status, row["created_at"],
        )  # fmt: skip
    out.print(table)
    total = nano_to_usd(sum(r.cost_nano for r in records))
    out.print(f"{len(records)} requests, {total} USD")


@app.command("models")
def models(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The catalog exactly as the gate sees it now (attestation included)."""
    from teegate.catalog import list_servable
    from teegate.live import open_live_upstreams

    settings = _settings(config)

    async def run() -> list[dict[str, Any]]:
        async with open_live_upstreams(settings) as live:
            return list_servable(live.catalog, live.assurance)

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


@app.command("attest")
def attest(model: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Attest MODEL's upstreams now with a fresh nonce and show every check."""
    from teegate.live import open_live_upstreams

    settings = _settings(config)

    async def run() -> list[dict[str, Any]]:
        async with open_live_upstreams(settings) as live:
            offers = live.catalog.servable(model)
            if not offers:
                err.print(f"[red]error:[/red] '{model}' is not a servable confidential model")
                raise typer.Exit(1)
            nonce = secrets.token_bytes(32)
            modes = {u.name: u.attestation for u in settings.upstreams}
            return [
                {
                    "upstream": offer.upstream,
                    "attestation": modes[offer.upstream],
                    "chute_id": offer.chute_id,
                    "channel": live.assurance.status(offer).channel or None,
                    "verdicts": await live.assurance.reports(offer, nonce),
                }
                for offer in offers
            ]

    results = asyncio.run(run())
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        _print_attestation(model, results)
    passed = any(v["passed"] for r in results for v in r["verdicts"])
    asserted = all(r["attestation"] == "provider-asserted" for r in results)
    if not (passed or asserted):
        raise typer.Exit(1)


def _print_attestation(model: str, results: list[dict[str, Any]]) -> None:
    for result in results:
        where = result["upstream"]
        if result["chute_id"] is not None and result["attestation"] == "chutes":
            where += f" (chute {result['chute_id']}; channel not bound: no e2e encryption)"
        if result["attestation"] == "provider-asserted":
            out.print(f"{model} on {where}: provider-asserted (no evidence to check)")
        elif not result["verdicts"]:
            out.print(f"{model} on {where}: [red]FAILED[/red] nothing attested for this offer")
        for verdict in result["verdicts"]:
            outcome = "[green]PASSED[/green]" if verdict["passed"] else "[red]FAILED[/red]"
            out.print(
                f"{model} on {where} ({verdict['mode']}): {outcome}"
                f" verdict {verdict['id']}, TCB {verdict['tcb_status']}"
            )
            for check in verdict["checks"]:
                mark = "[green]ok[/green]  " if check["ok"] else "[red]FAIL[/red]"
                out.print(f"  {mark} {check['name']}: {check['detail']}")
            if not verdict["passed"]:
                out.print(f"  reason: {verdict['reason']}")


@app.command("serve")
def serve(
    config: ConfigOption = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1)] = None,
) -> None:
    """Run the gateway (uvicorn with uvloop and httptools)."""
    import uvicorn

    from teegate import servers

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
        **servers.UVICORN_OPTIONS,
    )


@app.command("devstack")
def devstack(
    port: Annotated[int, typer.Option("--port")] = 8081,
    services_port: Annotated[int, typer.Option("--services-port")] = 8082,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    fault: Annotated[list[str] | None, typer.Option("--fault", help="Fault to switch on.")] = None,
    services_fault: Annotated[
        list[str] | None, typer.Option("--services-fault", help="PCS/NRAS fault to switch on.")
    ] = None,
    chunk_delay_ms: Annotated[float, typer.Option("--chunk-delay-ms", min=0)] = 0.0,
    catalog: Annotated[Path | None, typer.Option("--catalog", exists=True, dir_okay=False)] = None,
    tls_dir: Annotated[Path, typer.Option("--tls-dir")] = Path(".teegate/devstack-tls"),
    config: ConfigOption = None,
) -> None:
    """Run the simulated confidential upstream (TLS, attested) and its PCS/NRAS stand-ins."""
    from teegate.devstack import FAULTS, SERVICES_FAULTS, DevstackConfig, serve_devstack

    faults = _known_faults(fault, FAULTS)
    cfg = DevstackConfig(faults=faults, chunk_delay_s=chunk_delay_ms / 1000)
    if catalog is not None:
        cfg = dataclasses.replace(cfg, catalog_path=catalog)
    out.print(
        f"simulated enclave upstream on https://{host}:{port}/v1 (TLS key bound by its "
        f"quotes); PCS/NRAS stand-ins on http://{host}:{services_port}; "
        f"dev root CA in {tls_dir / 'root-ca.der'}"
    )
    serve_devstack(
        cfg,
        host=host,
        port=port,
        services_port=services_port,
        tls_dir=tls_dir,
        services_faults=_known_faults(services_fault, SERVICES_FAULTS),
    )


def _known_faults(names: list[str] | None, known: frozenset[str]) -> frozenset[str]:
    faults = frozenset(names or ())
    unknown = {f for f in faults if f.split("=", 1)[0] not in known}
    if unknown:
        err.print(f"[red]error:[/red] unknown fault(s) {sorted(unknown)}; known: {sorted(known)}")
        raise typer.Exit(2)
    return faults


@app.command("dev")
def dev(
    port: Annotated[int, typer.Option("--port")] = 8080,
    devstack_port: Annotated[int, typer.Option("--devstack-port")] = 8081,
    services_port: Annotated[int, typer.Option("--services-port")] = 8082,
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path(".teegate"),
    config: ConfigOption = None,
) -> None:
    """The one-command demo: simulated enclave + attestation services + gateway + a funded key."""
    from teegate import servers
    from teegate.app import create_app
    from teegate.devstack import DevstackConfig, SimulatedEnclave, devstack_servers

    enclave = SimulatedEnclave()
    upstream, services = devstack_servers(
        DevstackConfig(),
        enclave=enclave,
        host="127.0.0.1",
        port=devstack_port,
        services_port=services_port,
        tls_dir=data_dir / "devstack-tls",
    )
    overrides = _dev_overrides(data_dir, port, devstack_port, services_port)
    settings = _settings(config, **overrides)
    token = _with_store(settings, lambda store: _prepare_demo(store, settings))
    base_url = f"http://127.0.0.1:{port}/v1"
    _print_demo(base_url, token)
    servers.run_servers(
        upstream, services, servers.server(create_app(settings), host="127.0.0.1", port=port)
    )


def _dev_overrides(
    data_dir: Path, port: int, devstack_port: int, services_port: int
) -> dict[str, Any]:
    from teegate.devstack import SimulatedAttestationServices

    data_dir.mkdir(parents=True, exist_ok=True)
    secret_file = data_dir / "key-hash-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    services = f"http://127.0.0.1:{services_port}"
    upstream = UpstreamSettings(
        name="devstack", base_url=f"https://127.0.0.1:{devstack_port}", attestation="attested-tls"
    )
    attestation = AttestationSettings(
        pccs_url=services,
        nras_attest_url=f"{services}/v3/attest/gpu",
        nras_jwks_url=f"{services}/.well-known/jwks.json",
        nras_issuer=SimulatedAttestationServices.issuer,
        dev_root_ca_file=data_dir / "devstack-tls" / "root-ca.der",
    )
    return {
        "environment": "development",
        "data_dir": data_dir,
        "port": port,
        "key_hash_secret": secret_file.read_text().strip(),
        "upstreams": (upstream,),
        "attestation": attestation,
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
        "[bold]teegate dev[/bold]: gateway + simulated TDX enclave upstream, attested with "
        "dcap-qvl against a dev root CA (every verdict is labelled 'simulated')"
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
