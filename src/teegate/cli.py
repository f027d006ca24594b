"""The `teegate` command. Exit codes: 0 ok, 1 failure, 2 usage error.

Every error is one line on stderr; `teegate --debug ...` shows the traceback of
an unexpected one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.engine import make_url

from teegate import apikeys, auth, console
from teegate.admin import Admin
from teegate.apikeys import KEEP, KeyChange, KeyPolicy
from teegate.attestation import MeasurementAllowList
from teegate.billing import (
    BUDGET_PERIODS,
    MoneyError,
    nano_to_usd,
    usd_to_nano,
    wall_ms,
)
from teegate.catalog import AttestationFloor
from teegate.config import (
    DEV_CONFIG_FILE,
    AttestationSettings,
    Settings,
    UpstreamSettings,
    find_config_file,
    load_settings,
)
from teegate.dashboard import invite_link
from teegate.errors import ConfigError, PolicyError
from teegate.logs import configure_logging
from teegate.store import (
    AccountStore,
    DashboardStore,
    Ledger,
    StoreConflict,
    StoreNotFound,
    create_engine,
    is_current,
    upgrade,
)

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
err = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML settings file (else $TEEGATE_CONFIG, else ./.teegate/teegate.toml, "
        "which `teegate dev` writes, if present); TEEGATE_* env vars override it.",
        exists=True,
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@dataclasses.dataclass
class _Options:
    debug: bool = False


_options = _Options()


@app.callback()
def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="On an unexpected error, show its traceback.")
    ] = False,
) -> None:
    _options.debug = debug


def main() -> None:
    configure_logging()
    try:
        status = app(standalone_mode=False)
    except typer.TyperException as exc:  # a usage error, found before any command runs
        if message := exc.format_message():  # none: no arguments, and the help was shown
            ctx = getattr(exc, "ctx", None)
            _error_line(message + (f" (see `{ctx.command_path} --help`)" if ctx else ""))
        sys.exit(exc.exit_code)
    except Exception as exc:
        if _options.debug:
            raise
        _error_line(f"{type(exc).__name__}: {_first_line(exc)} (`teegate --debug` shows where)")
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


def _first_line(exc: BaseException) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), "")


def _error_line(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def _fail(message: str, status: int = 1) -> NoReturn:
    _error_line(message)
    raise typer.Exit(status)


def _quiet_logs() -> None:
    """A command whose output is its result: the live view's routine events (an
    attestation refreshed) would only repeat it; warnings and errors still show."""
    configure_logging(level=logging.WARNING)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    return _load_settings(find_config_file(config), overrides)


def _load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        if config is None:
            _fail(f"{exc} (no settings file: give --config, or run here beside `teegate dev`)")
        _fail(str(exc))


def _with_store(
    settings: Settings,
    action: Callable[[AccountStore], Awaitable[T]],
    *,
    migrate: bool = False,
) -> T:
    where = make_url(settings.resolved_database_url).render_as_string(hide_password=True)

    async def run() -> T:
        engine = create_engine(settings.resolved_database_url)
        try:
            if migrate:
                await upgrade(engine)
            elif not await is_current(engine):
                _fail(f"the database schema is not current: run `teegate db upgrade` ({where})")
            return await action(AccountStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except (StoreConflict, StoreNotFound, MoneyError, ValueError) as exc:
        _fail(str(exc))


def _key_secret(settings: Settings) -> bytes:
    if settings.key_hash_secret is None:
        _fail("key_hash_secret is not set (TEEGATE_KEY_HASH_SECRET or key_hash_secret_file)")
    return settings.key_hash_secret.get_secret_value().encode()


def _with_admin(settings: Settings, action: Callable[[Admin], Awaitable[T]]) -> T:
    """The operator's operations through the one service the admin API calls too."""
    return _with_store(settings, lambda store: action(Admin(store, Ledger(store.engine), settings)))


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


AccountArgument = Annotated[str, typer.Argument(help="The account's name.", show_default=False)]
KeyIdArgument = Annotated[
    str, typer.Argument(help="The key's id, as `keys list` shows it.", show_default=False)
]


EmailOption = Annotated[
    str | None,
    typer.Option(
        "--email",
        help="The dashboard sign-in's email; prints a one-time invite link to set its password.",
    ),
]


@accounts_app.command("create")
def accounts_create(
    name: AccountArgument,
    credit_usd: Annotated[
        str | None, typer.Option("--credit-usd", help="Initial credit in USD, e.g. 5 or 0.5.")
    ] = None,
    email: EmailOption = None,
    config: ConfigOption = None,
) -> None:
    """Create an account, optionally with some credit and a dashboard sign-in."""
    settings = _settings(config)

    async def run(store: AccountStore) -> str | None:
        admin = Admin(store, Ledger(store.engine), settings)
        await admin.create_account(name, usd_to_nano(credit_usd) if credit_usd else None)
        return await _invite(settings, store, name, email) if email is not None else None

    link = _with_store(settings, run)
    out.print(f"created account '{name}'")
    if link is not None:
        _print_invite(link)


@accounts_app.command("invite")
def accounts_invite(
    name: AccountArgument, email: EmailOption = None, config: ConfigOption = None
) -> None:
    """Print a one-time link that sets the account's dashboard password (a new email
    with --email; else the account's own)."""
    settings = _settings(config)
    _print_invite(_with_store(settings, lambda store: _invite(settings, store, name, email)))


async def _invite(settings: Settings, store: AccountStore, name: str, email: str | None) -> str:
    dashboard = DashboardStore(store.engine)
    if email is not None:
        if "@" not in email.strip()[1:-1]:
            raise ValueError(f"'{email}' is not an email address")
        login = await dashboard.set_email(name, console.normal_email(email))
    else:
        found = await dashboard.login_of(name)
        if found is None:
            raise ValueError(f"account '{name}' has no dashboard email: give --email")
        login = found
    token = await console.invite(dashboard, login.account_id, settings.invite_ttl_s)
    return invite_link(settings.resolved_public_url, token)


def _print_invite(link: str) -> None:
    """The token is in the link's fragment, which browsers never send to the server, so
    it reaches no access log; it works once, until the invite expires."""
    out.print(f"invite link (works once; send it privately): {link}", highlight=False)


@accounts_app.command("list")
def accounts_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every account with its balance."""
    settings = _settings(config)
    rows = _with_admin(settings, lambda admin: admin.list_accounts())
    if as_json:
        print(
            json.dumps(
                [{"id": a["id"], "name": a["name"], "balance_usd": a["balance"]} for a in rows]
            )
        )
        return
    table = Table("id", Column("name", overflow="fold"), "balance (USD)")
    for a in rows:
        table.add_row(str(a["id"]), a["name"], a["balance"])
    out.print(table)


@accounts_app.command("budget")
def accounts_budget(
    name: AccountArgument,
    budget_usd: Annotated[
        list[str],
        typer.Option(
            "--budget-usd",
            help="PERIOD=USD: day, month or lifetime, e.g. month=100 (repeat; "
            "PERIOD=none drops it). Every key of the account counts against it.",
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Set or drop the account's own spend budgets (beside each key's)."""
    settings = _settings(config)
    _with_admin(settings, lambda admin: admin.set_budgets(name, _budgets(budget_usd)))
    out.print(f"'{name}' budgets set")


@accounts_app.command("credit")
def accounts_credit(
    name: AccountArgument,
    usd: Annotated[str, typer.Option("--usd", help="Amount to add, e.g. 25 or 0.5.")],
    config: ConfigOption = None,
) -> None:
    """Add credit to an account and print its balance."""
    settings = _settings(config)
    account = _with_admin(settings, lambda admin: admin.credit(name, usd_to_nano(usd)))
    out.print(f"'{name}' balance: {account['balance']} USD")


ModelsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--models",
        help="Models the key may use: exact ids or prefixes ending in '/' or '*' "
        "(repeat, or separate with commas). Default: every model.",
    ),
]
TcbOption = Annotated[
    list[str] | None,
    typer.Option("--tcb", help="TCB statuses the key accepts (repeat); a subset of the gateway's."),
]
RequireGpuOption = Annotated[
    bool, typer.Option("--require-gpu", help="Serve the key only with GPU evidence.")
]
UpstreamOption = Annotated[
    list[str] | None, typer.Option("--upstream", help="Upstreams the key may reach (repeat).")
]
MeasurementsOption = Annotated[
    Path | None,
    typer.Option(
        "--measurements",
        help="JSON file of accepted measurement values per register, as the gateway's.",
        exists=True,
        dir_okay=False,
    ),
]
MaxAgeOption = Annotated[
    int | None,
    typer.Option("--max-verdict-age", min=1, help="Oldest verdict the key accepts, in seconds."),
]
TpmOption = Annotated[
    int | None,
    typer.Option("--tpm", min=1, help="Tokens per minute (prompt bound + max_tokens, held)."),
]
BudgetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--budget-usd",
        help="A spend budget, PERIOD=USD: day, month or lifetime, e.g. day=5 (repeat; "
        "PERIOD=none drops it).",
    ),
]
RpmOption = Annotated[
    int | None,
    typer.Option("--rpm", min=1, help="Requests per minute (default: default_rpm)."),
]


def _floor(
    tcb: list[str] | None,
    require_gpu: bool,
    upstreams: list[str] | None,
    measurements: Path | None,
    max_age_s: int | None,
) -> AttestationFloor | None:
    if not (tcb or require_gpu or upstreams or measurements or max_age_s):
        return None
    try:
        registers = MeasurementAllowList.from_file(measurements).allowed if measurements else None
    except ConfigError as exc:
        raise PolicyError(str(exc)) from exc
    return AttestationFloor(
        tcb=frozenset(tcb) if tcb else None,
        require_gpu=require_gpu,
        upstreams=frozenset(upstreams) if upstreams else None,
        measurements=registers,
        max_age_s=max_age_s,
    )


def _budgets(values: list[str] | None) -> dict[str, int | None]:
    """PERIOD=USD pairs, each checked: the period is a known one, the amount exact."""
    budgets: dict[str, int | None] = {}
    for value in values or []:
        period, _, amount = value.partition("=")
        if period not in BUDGET_PERIODS or not amount:
            raise PolicyError(
                f"--budget-usd {value!r}: expected day=USD, month=USD or lifetime=USD"
            )
        budgets[period] = None if amount == "none" else usd_to_nano(amount)
    return budgets


def _models(models: list[str] | None) -> tuple[str, ...] | None:
    if not models:
        return None
    return apikeys.model_patterns(p for m in models for p in m.split(","))


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option("--account", help="Account the key bills to.")],
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    budget_usd: BudgetOption = None,
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "",
    models: ModelsOption = None,
    tcb: TcbOption = None,
    require_gpu: RequireGpuOption = False,
    upstream: UpstreamOption = None,
    measurements: MeasurementsOption = None,
    max_verdict_age: MaxAgeOption = None,
    config: ConfigOption = None,
) -> None:
    """Create an API key; its secret is printed once, on the last line."""
    settings = _settings(config)
    _key_secret(settings)

    async def run(admin: Admin) -> dict[str, Any]:
        floor = _floor(tcb, require_gpu, upstream, measurements, max_verdict_age)
        policy = KeyPolicy(_models(models), floor, tpm)
        budgets = _budgets(budget_usd)
        return await admin.create_key(account, name=name, rpm=rpm, policy=policy, budgets=budgets)

    key = _with_admin(settings, run)
    out.print(f"key {key['id']} for '{account}'. The secret is shown only now:")
    print(key["key"])


@keys_app.command("update")
def keys_update(
    key_id: KeyIdArgument,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    no_tpm: Annotated[bool, typer.Option("--no-tpm", help="Drop the key's token limit.")] = False,
    budget_usd: BudgetOption = None,
    models: ModelsOption = None,
    all_models: Annotated[
        bool, typer.Option("--all-models", help="Drop the key's model allow-list.")
    ] = False,
    tcb: TcbOption = None,
    require_gpu: RequireGpuOption = False,
    upstream: UpstreamOption = None,
    measurements: MeasurementsOption = None,
    max_verdict_age: MaxAgeOption = None,
    no_attestation_policy: Annotated[
        bool,
        typer.Option(
            "--no-attestation-policy",
            help="Drop the key's attestation policy (the gateway's holds).",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Change a key's limit or policy: each option given replaces that part of it
    (the attestation options together replace the key's attestation policy)."""
    settings = _settings(config)

    async def run(admin: Admin) -> dict[str, Any]:
        floor = _floor(tcb, require_gpu, upstream, measurements, max_verdict_age)
        change = KeyChange(
            rpm=KEEP if rpm is None else rpm,
            models=None if all_models else (_models(models) or KEEP),
            attestation=None if no_attestation_policy else (floor or KEEP),
            tpm=None if no_tpm else (tpm or KEEP),
            budgets=_budgets(budget_usd),
        )
        return await admin.update_key(key_id, change)

    key = _with_admin(settings, run)
    out.print(f"updated {key['id']}")
    _print_key(key, settings, as_json=False)


@keys_app.command("show")
def keys_show(
    key_id: KeyIdArgument, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """One key: its account, limit, status and policy (never the secret)."""
    settings = _settings(config)
    key = _with_admin(settings, lambda admin: admin.get_key(key_id))
    _print_key(key, settings, as_json=as_json)


def _print_key(described: dict[str, Any], settings: Settings, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(described))
        return
    policy = described["policy"]
    floor = policy["attestation"]
    table = Table("field", Column("value", overflow="fold"), show_header=False)
    for label, value in [
        ("id", described["id"]),
        ("account", described["account"]),
        ("name", described["name"]),
        ("key", described["hint"]),
        ("rpm", str(described["rpm"] or settings.default_rpm)),
        ("tpm", str(policy["tpm"]) if policy["tpm"] else "none"),
        ("status", "active" if described["active"] else "revoked"),
        ("models", ", ".join(policy["models"]) if policy["models"] else "all"),
        ("attestation", json.dumps(floor) if floor else "the gateway's"),
        *(
            (
                f"{b['scope']} {b['period']} budget (USD)",
                f"{b['spent']} spent, {b['held']} held of {b['limit']}",
            )
            for b in described["budgets"]
        ),
    ]:
        table.add_row(label, escape(value))
    out.print(table)


@keys_app.command("list")
def keys_list(
    account: Annotated[
        str | None, typer.Option("--account", help="Only this account's keys.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Keys with their account, label, hint, limit and status (never the secret)."""
    settings = _settings(config)
    keys = _with_admin(settings, lambda admin: admin.list_keys(account))
    if as_json:
        print(json.dumps(keys))
        return
    table = Table(
        _id_column("id", [k["id"] for k in keys]), "account", "name", "key", "rpm", "status"
    )
    for k in keys:
        table.add_row(
            k["id"],
            k["account"],
            k["name"],
            k["hint"],
            str(k["rpm"] or settings.default_rpm),
            "active" if k["active"] else "revoked",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: KeyIdArgument, config: ConfigOption = None) -> None:
    """Revoke a key: it is refused from the next request on."""
    settings = _settings(config)
    _with_admin(settings, lambda admin: admin.revoke_key(key_id))
    out.print(f"revoked {key_id}")


@keys_app.command("rotate")
def keys_rotate(key_id: KeyIdArgument, config: ConfigOption = None) -> None:
    """Issue a replacement key and revoke the old one."""
    settings = _settings(config)
    _key_secret(settings)
    key = _with_admin(settings, lambda admin: admin.rotate_key(key_id))
    out.print(f"{key_id} revoked; new key {key['id']}. The secret is shown only now:")
    print(key["key"])


@app.command("admin-token")
def admin_token() -> None:
    """Make an admin token for /admin/v1, /metrics and /readyz's report: the token is
    printed once, then the setting that keeps only its SHA-256."""
    token = apikeys.generate_admin_token()
    out.print("The admin token is shown only now (send it as 'Authorization: Bearer <token>'):")
    print(token)
    out.print("Put its hash in the settings (or TEEGATE_ADMIN_TOKEN_SHA256):")
    print(f'admin_token_sha256 = "{apikeys.token_sha256(token)}"', flush=True)


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
    from teegate.billing import parse_since

    settings = _settings(config)
    try:
        since_ms = parse_since(since) if since else None
    except ValueError as exc:
        _fail(f"--since: {exc}", status=2)
    records = _with_admin(
        settings, lambda admin: admin.usage(account=account, since_ms=since_ms, limit=limit)
    )
    _print_usage(records, as_json)


def _print_usage(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(records))
        return
    table = Table(
        _id_column("request", [r["id"] for r in records]), "account", "model", "prompt",
        "completion", "cost (USD)", "settled by", "status", "started (UTC)",
    )  # fmt: skip
    for r in records:
        table.add_row(
            r["id"], r["account"], r["model"], str(r["tokens_prompt"]),
            str(r["tokens_completion"]), r["total_cost"], r["settled_by"], r["status"],
            r["created_at"],
        )  # fmt: skip
    out.print(table)
    total = nano_to_usd(sum(usd_to_nano(r["total_cost"]) for r in records))
    out.print(f"{len(records)} requests, {total} USD")


def _id_column(header: str, ids: list[str]) -> Column:
    """Ids whole: the other columns narrow first, and on a terminal too narrow even so
    an id folds onto more lines instead of being cut (request ids share a long prefix)."""
    return Column(header, width=max(map(len, [header, *ids])), overflow="fold")


@app.command("models")
def models(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The catalog exactly as the gate sees it now (attestation included)."""
    from teegate.catalog import list_servable
    from teegate.live import open_live_upstreams

    settings = _settings(config)
    _quiet_logs()

    async def run() -> tuple[list[dict[str, Any]], list[str]]:
        async with open_live_upstreams(settings) as live:
            statuses = {u.name: live.assurance.upstream_status(u.name) for u in settings.upstreams}
            failing = [f"{name}: {s.reason}" for name, s in statuses.items() if not s.passed]
            return list_servable(live.catalog, live.assurance), failing

    data, failing = asyncio.run(run())
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        _print_models(data)
    if not data:
        why = "; ".join(failing) if failing else "no upstream is configured (see --config)"
        err.print(f"no confidential model is servable: {escape(why)}", highlight=False)


def _print_models(data: list[dict[str, Any]]) -> None:
    table = Table(
        _id_column("model", [m["id"] for m in data]), Column("capabilities", overflow="fold"),
        "context", "prompt $/1M", "completion $/1M", "attestation",
    )  # fmt: skip
    for m in data:
        modality = [] if m["modality"] == "chat" else [m["modality"]]  # chat: the default
        table.add_row(
            m["id"],
            ", ".join([*modality, *m["capabilities"]]),
            str(m["context_length"]),
            m["pricing"]["prompt"],
            m["pricing"]["completion"],
            m["attestation"]["mode"],
        )
    out.print(table)


@app.command("attest")
def attest(
    model: Annotated[
        str, typer.Argument(help="A model id, as `teegate models` lists it.", show_default=False)
    ],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Attest MODEL's upstreams now with a fresh nonce and show every check."""
    from teegate.live import open_live_upstreams

    settings = _settings(config)
    _quiet_logs()

    async def run() -> list[dict[str, Any]]:
        async with open_live_upstreams(settings) as live:
            offers = live.catalog.servable(model)
            if not offers:
                _fail(f"'{model}' is not a servable confidential model (see `teegate models`)")
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
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Gateway processes (more than one needs Redis)."),
    ] = None,
) -> None:
    """Run the gateway (uvicorn with uvloop and httptools) on a migrated database."""
    from teegate import servers

    config = find_config_file(config)
    overrides = {"workers": workers} if workers else {}
    settings = _load_settings(config, overrides)
    _with_store(settings, _connect_only)  # says in one line when to `db upgrade` first
    if config is not None:
        os.environ["TEEGATE_CONFIG"] = str(config.resolve())
    if workers:
        os.environ["TEEGATE_WORKERS"] = str(workers)
    servers.run(
        servers.GatewayConfig(
            "teegate.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            http_limits=settings.http,
        )
    )


async def _connect_only(store: AccountStore) -> None:
    return None


HostOption = Annotated[str, typer.Option("--host", help="Address to listen on.")]
DevstackPortOption = Annotated[
    int,
    typer.Option(
        "--devstack-port", min=1, max=65535, help="Port of the simulated enclave upstream (TLS)."
    ),
]
ServicesPortOption = Annotated[
    int,
    typer.Option(
        "--services-port", min=1, max=65535, help="Port of the PCS/NRAS stand-ins (HTTP)."
    ),
]


@app.command("devstack")
def devstack(
    port: Annotated[
        int,
        typer.Option(
            "--port", min=1, max=65535, help="Port of the simulated enclave upstream (TLS)."
        ),
    ] = 8081,
    services_port: ServicesPortOption = 8082,
    host: HostOption = "127.0.0.1",
    fault: Annotated[
        list[str] | None, typer.Option("--fault", help="Upstream fault to switch on.")
    ] = None,
    services_fault: Annotated[
        list[str] | None, typer.Option("--services-fault", help="PCS/NRAS fault to switch on.")
    ] = None,
    chunk_delay_ms: Annotated[
        float,
        typer.Option("--chunk-delay-ms", min=0, help="Pause between streamed chunks (ms)."),
    ] = 0.0,
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            exists=True,
            dir_okay=False,
            help="Catalog JSON to serve instead of the built-in one.",
        ),
    ] = None,
    tls_dir: Annotated[
        Path,
        typer.Option("--tls-dir", help="Where the TLS files and the dev root CA are written."),
    ] = Path(".teegate/devstack-tls"),
    embeddings: Annotated[
        bool,
        typer.Option(
            "--embeddings/--no-embeddings",
            help="Also serve a confidential embedding model (/v1/embeddings).",
        ),
    ] = False,
) -> None:
    """Run the simulated confidential upstream (TLS, attested) and its PCS/NRAS stand-ins."""
    from teegate import servers
    from teegate.devstack import (
        FAULTS,
        SERVICES_FAULTS,
        DevstackConfig,
        SimulatedEnclave,
        devstack_servers,
    )

    faults = _known_faults(fault, FAULTS)
    services_faults = _known_faults(services_fault, SERVICES_FAULTS)
    sockets = _listen(host, {"--port": port, "--services-port": services_port})
    cfg = DevstackConfig(faults=faults, chunk_delay_s=chunk_delay_ms / 1000, embeddings=embeddings)
    if catalog is not None:
        cfg = dataclasses.replace(cfg, catalog_path=catalog)
    out.print(
        f"simulated enclave upstream on https://{host}:{port}/v1 (TLS key bound by its "
        f"quotes); PCS/NRAS stand-ins on http://{host}:{services_port}; "
        f"dev root CA in {tls_dir / 'root-ca.der'}"
    )
    upstream, services = devstack_servers(
        cfg,
        enclave=SimulatedEnclave(),
        host=host,
        port=port,
        services_port=services_port,
        tls_dir=tls_dir,
        services_faults=services_faults,
    )
    servers.run_servers(upstream, services, sockets=sockets)


def _known_faults(names: list[str] | None, known: frozenset[str]) -> frozenset[str]:
    faults = frozenset(names or ())
    unknown = {f for f in faults if f.split("=", 1)[0] not in known}
    if unknown:
        _fail(f"unknown fault(s) {sorted(unknown)}; known: {sorted(known)}", status=2)
    return faults


def _listen(host: str, ports: dict[str, int]) -> list[socket.socket]:
    """Every port bound and listening before anything is made or printed, so a taken
    one is one line naming it and the flag that changes it (flag -> port)."""
    from teegate import servers

    sockets: list[socket.socket] = []
    try:
        for flag, port in ports.items():
            try:
                sockets.append(servers.listen(host, port))
            except OSError as exc:
                why = "is in use" if exc.errno == errno.EADDRINUSE else f"failed: {exc.strerror}"
                _fail(f"port {port} {why} (change it with {flag})", status=2)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@app.command("dev")
def dev(
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port of the gateway.")
    ] = 8080,
    devstack_port: DevstackPortOption = 8081,
    services_port: ServicesPortOption = 8082,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", help="Where the database, the secret and teegate.toml are kept."
        ),
    ] = Path(".teegate"),
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            exists=True,
            dir_okay=False,
            help="TOML settings to start from (else $TEEGATE_CONFIG); the demo's own "
            "(ports, upstream, attestation services, data dir, secret) override it.",
        ),
    ] = None,
) -> None:
    """The one-command demo: simulated enclave + attestation services + gateway + a funded key.

    Writes the settings it runs with to DATA_DIR/teegate.toml, for the other commands.
    """
    from teegate import servers
    from teegate.app import create_app
    from teegate.devstack import DevstackConfig, SimulatedEnclave, SimulatedTsm, devstack_servers
    from teegate.settings_file import settings_toml

    ports = {"--devstack-port": devstack_port, "--services-port": services_port, "--port": port}
    sockets = _listen("127.0.0.1", ports)
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    enclave = SimulatedEnclave(e2ee=True)  # EHBP keys: teegate.client encrypts end to end
    upstream, services = devstack_servers(
        DevstackConfig(embeddings=True),
        enclave=enclave,
        host="127.0.0.1",
        port=devstack_port,
        services_port=services_port,
        tls_dir=data_dir / "devstack-tls",
    )
    admin_token = _demo_admin_token(data_dir)
    overrides = _dev_overrides(data_dir, port, devstack_port, services_port)
    overrides["admin_token_sha256"] = apikeys.token_sha256(admin_token)
    settings = _load_settings(config, overrides)
    configure_logging(level=settings.logging_level)
    settings_file = data_dir / "teegate.toml"
    _write_private(settings_file, settings_toml(settings))
    token = _with_store(settings, lambda store: _prepare_demo(store, settings), migrate=True)
    gateway = servers.server(
        create_app(settings), host="127.0.0.1", port=port, http_limits=settings.http
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    with SimulatedTsm(settings.tsm_report_dir, enclave.pki):  # the gateway attests itself too
        servers.run_servers(
            upstream,
            services,
            gateway,
            sockets=sockets,
            alongside=lambda: _announce_when_ready(base_url, token, settings_file, admin_token),
        )


def _dev_overrides(
    data_dir: Path, port: int, devstack_port: int, services_port: int
) -> dict[str, Any]:
    from teegate.devstack import SimulatedAttestationServices

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
        "key_hash_secret_file": _demo_secret(data_dir),
        "upstreams": (upstream,),
        "attestation": attestation,
        "tsm_report_dir": data_dir / "tsm",  # served by devstack.SimulatedTsm
    }


def _demo_secret(data_dir: Path) -> Path:
    """The demo's key hash secret, made on the first run only: keys issued on an
    earlier run keep working."""
    path = data_dir / "key-hash-secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(32))
    return path


def _demo_admin_token(data_dir: Path) -> str:
    """The demo's admin token (for /admin/v1, /metrics and /readyz's report), made on the
    first run only and kept owner-only beside the key hash secret."""
    path = data_dir / "admin-token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    token = apikeys.generate_admin_token()
    with os.fdopen(fd, "w") as file:
        file.write(token)
    return token


def _write_private(path: Path, text: str) -> None:
    """Owner-only, as the settings may name a database with its password."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


async def _prepare_demo(store: AccountStore, settings: Settings) -> str:
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


async def _announce_when_ready(
    base_url: str, token: str, settings_file: Path, admin_token: str
) -> None:
    """The key and the curl line once /readyz says so: whoever reads them may call at once."""
    import aiohttp

    readyz = base_url.removesuffix("/v1") + "/readyz"
    told_why = False
    operator = {"Authorization": f"Bearer {admin_token}"}  # /readyz says why to operators
    async with aiohttp.ClientSession(headers=operator) as session:
        while True:
            try:
                async with session.get(readyz) as response:
                    if response.status == 200:
                        break
                    report = await response.json(content_type=None)
            except (aiohttp.ClientError, ValueError):
                report = None  # not listening yet
            if report is not None and not told_why:
                told_why = True
                problems = {k: v for k, v in report.get("checks", {}).items() if v != "ok"}
                waiting = "; ".join(f"{k}: {v}" for k, v in problems.items())
                err.print(f"waiting for the gateway: {escape(waiting)}", highlight=False)
            await asyncio.sleep(0.05)
    _print_demo(base_url, token, settings_file)


def _print_demo(base_url: str, token: str, settings_file: Path) -> None:
    if settings_file == DEV_CONFIG_FILE.resolve():
        settings = f"{DEV_CONFIG_FILE} (the other teegate commands run here read it)"
    else:
        settings = f"{settings_file} (give it to the other teegate commands with --config)"
    out.print(
        "[bold]teegate dev[/bold]: gateway + simulated TDX enclave upstream, attested with "
        "dcap-qvl against a dev root CA (every verdict is labelled 'simulated')"
    )
    out.print(f"  base URL : {base_url}")
    out.print(f"  settings : {settings}")
    out.print(f"  API key  : {token}  (demo account, shown once)")
    admin_file = settings_file.parent / "admin-token"
    out.print(f"  admin API: {base_url.removesuffix('/v1')}/admin/v1 (token in {admin_file})")
    out.print(
        f"  dashboard: {base_url.removesuffix('/v1')}/dashboard  (to sign in as demo: "
        "`teegate accounts invite demo --email YOU@EXAMPLE` prints a link)",
        highlight=False,
    )
    out.print("  try it   :")
    print(
        f"curl {base_url}/chat/completions -H 'Authorization: Bearer {token}' "
        '-H \'Content-Type: application/json\' -d \'{"model": "deepseek-ai/DeepSeek-R1-0528-TEE",'
        ' "messages": [{"role": "user", "content": "Hello!"}]}\'',
        flush=True,
    )


receipts_app = typer.Typer(help="The receipt keys of this gateway.", no_args_is_help=True)
app.add_typer(receipts_app, name="receipts")


@receipts_app.command("keys")
def receipts_keys(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every receipt key's public half, newest last: what clients pin (`teegate verify --key`)."""
    from teegate.receipts import SigningKey, b64
    from teegate.store import ReceiptLog

    async def run(store: AccountStore) -> list[dict[str, Any]]:
        keys = await ReceiptLog(store.engine).signing_keys()
        signing = [SigningKey.from_raw(k.private_key, k.created_ms) for k in keys]
        return [
            {"key_id": k.id, "public_key": b64(k.public), "created_ms": k.created_ms}
            for k in signing
        ]

    keys = _with_store(_settings(config), run)
    if as_json:
        print(json.dumps(keys, indent=2))
        return
    for key in keys:
        out.print(f"{key['key_id']}  {key['public_key']}")


@receipts_app.command("rotate-key")
def receipts_rotate_key(config: ConfigOption = None) -> None:
    """Add a new receipt key. Gateways sign with it once restarted; receipts signed by
    older keys still verify (each key stays in the transparency log)."""
    from teegate.receipts import SigningKey, StoredKey, b64
    from teegate.store import ReceiptLog

    key = SigningKey.generate(wall_ms())

    async def run(store: AccountStore) -> None:
        await ReceiptLog(store.engine).add_signing_key(StoredKey(key.raw(), key.created_ms))

    _with_store(_settings(config), run)
    out.print(f"new receipt key {key.id}  {b64(key.public)}")


@app.command("verify")
def verify(
    receipt: Annotated[
        str,
        typer.Argument(help="A receipt id (rcpt_...) or a file holding the signed receipt."),
    ],
    gateway: Annotated[
        str, typer.Option("--gateway", help="The gateway's address (before /v1).")
    ] = "http://127.0.0.1:8080",
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Your key: needed to fetch a receipt by id.")
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="A receipt key to trust (base64 Ed25519 public key); repeat."),
    ] = None,
    request: Annotated[
        Path | None, typer.Option("--request", help="The exact request body you sent.")
    ] = None,
    response: Annotated[
        Path | None, typer.Option("--response", help="The exact response bytes you received.")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Pinned keys and the last tree head seen of each log "
            "[default: ~/.teegate/verify-state.json].",
        ),
    ] = None,
    attest_gateway: Annotated[
        bool,
        typer.Option(
            "--attest-gateway",
            help="Check the gateway's own TDX quote binds its receipt key (then no --key).",
        ),
    ] = False,
    recheck_upstream: Annotated[
        bool,
        typer.Option(
            "--recheck-upstream",
            help="Re-verify the upstream's quote behind the receipt's verdict (while current).",
        ),
    ] = False,
    pccs_url: Annotated[
        str, typer.Option("--pccs-url", help="Where quote collateral comes from.")
    ] = "https://api.trustedservices.intel.com",
    root_ca: Annotated[
        Path | None,
        typer.Option("--root-ca", help="A dev root CA (DER) instead of Intel's: tests only."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a receipt step by step: signature, key, request and response hashes, the
    tree head, the verdict's and key's inclusion in the log, consistency with the last
    head seen, and with --attest-gateway the gateway's own quote. Exit 0 only if every
    step passed."""
    import httpx

    from teegate.verify import QuoteCheck
    from teegate.verify import verify as run_verify

    target: str | Path = receipt if receipt.startswith("rcpt_") else Path(receipt)
    quotes = QuoteCheck(pccs_url, root_ca.read_bytes() if root_ca else None)
    try:
        report = run_verify(
            target,
            base_url=gateway,
            api_key=api_key,
            state_file=state or Path.home() / ".teegate" / "verify-state.json",
            pin=key or (),
            request=request.read_bytes() if request else None,
            response=response.read_bytes() if response else None,
            gateway=quotes if attest_gateway else None,
            upstream=quotes if recheck_upstream else None,
        )
    except httpx.HTTPError as exc:
        _fail(f"could not fetch from {gateway}: {_first_line(exc)}")
    except (OSError, ValueError) as exc:
        _fail(f"could not read the receipt: {_first_line(exc)}")
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        marks = {"passed": "[green]ok[/green]  ", "failed": "[red]FAIL[/red]", "skipped": "skip"}
        out.print(f"receipt {report.receipt_id}")
        for step in report.steps:
            out.print(f"  {marks[step.outcome]} {step.name}: {escape(step.detail)}")
        out.print("[green]verified[/green]" if report.ok else "[red]NOT verified[/red]")
    if not report.ok:
        raise typer.Exit(1)
