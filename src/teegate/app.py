"""Builds the ASGI app from Settings. Wiring only: every part is made in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from teegate.admin import Admin
from teegate.api import (
    Gateway,
    KeyAuthenticator,
    RequestContextMiddleware,
    on_http_exception,
    on_teegate_error,
    routes,
)
from teegate.assurance import UpstreamAssurance
from teegate.attestation import ConfigfsTsm
from teegate.auth import Authenticator
from teegate.billing import Billing
from teegate.catalog import Catalog
from teegate.chat import NO_TRACE, ChatService, Meter, Trace
from teegate.config import Settings, load_settings
from teegate.console import AccountConsole, csrf_key
from teegate.dashboard import Dashboard, dashboard_routes
from teegate.embeddings import EmbeddingsService
from teegate.errors import ConfigError, TeegateError
from teegate.heap import HeapTrimmer, glibc_malloc_trim
from teegate.live import open_live_upstreams
from teegate.logs import configure_logging
from teegate.metrics import Metrics
from teegate.payments import StripeTopUp
from teegate.ratelimit import LocalRateLimiter, RateLimiter
from teegate.ratelimit.redis import RedisRateLimiter
from teegate.readiness import Check, Readiness
from teegate.receipts import ReceiptService
from teegate.store import (
    AccountStore,
    DashboardStore,
    Ledger,
    ReceiptLog,
    create_engine,
    is_current,
    ping,
    writer_for,
)
from teegate.tracing import TracedUpstream, Tracing, tracing_from_settings
from teegate.upstream import UpstreamClient

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter


def create_app(settings: Settings, *, span_exporter: SpanExporter | None = None) -> Starlette:
    """`span_exporter` (a test's in-memory one) turns tracing on without a collector."""
    metrics = Metrics()
    tracing = tracing_from_settings(settings, span_exporter)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with _running_gateway(settings, metrics, tracing) as (gw, dashboard):
                app.state.gateway = gw
                app.state.dashboard = dashboard
                yield
        finally:
            if tracing is not None:
                tracing.shutdown()

    tracer = tracing.tracer if tracing is not None else None
    return Starlette(
        routes=[*routes(), *dashboard_routes()],
        middleware=[Middleware(RequestContextMiddleware, metrics=metrics, tracer=tracer)],
        exception_handlers={
            TeegateError: on_teegate_error,
            HTTPException: on_http_exception,
        },
        lifespan=lifespan,
    )


@contextlib.asynccontextmanager
async def _running_gateway(
    settings: Settings, metrics: Metrics, tracing: Tracing | None
) -> AsyncIterator[tuple[Gateway, Dashboard]]:
    engine = create_engine(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        pool_timeout_s=settings.database_pool_timeout_s,
        statement_timeout_s=settings.database_statement_timeout_s,
        connect_timeout_s=settings.database_connect_timeout_s,
    )
    stack = contextlib.AsyncExitStack()
    try:
        if not await is_current(engine):
            raise ConfigError("the database schema is not current: run `teegate db upgrade`")
        live = await stack.enter_async_context(open_live_upstreams(settings))
        catalog, assurance = live.catalog, live.assurance
        writer = writer_for(engine)  # the ledger's, and on SQLite the receipts' too
        ledger = Ledger(engine, writer=writer)
        billing = Billing(
            ledger,
            hold_ttl_s=settings.hold_ttl_s,
            reaper_interval_s=settings.reaper_interval_s,
            observer=metrics,
            top_up_url=_top_up_url(settings),
        )
        metrics.holds_live.set_function(lambda: float(billing.meter.live_holds))
        metrics.settlements_deferred.set_function(lambda: float(billing.meter.pending_settlements))
        limiter = _rate_limiter(settings)
        stack.push_async_callback(limiter.aclose)
        metrics.ratelimit_degraded.set_function(lambda: float(limiter.degraded))
        metrics.catalog_models.set_function(lambda: float(len(catalog.servable_ids())))
        metrics.watch_verdicts([u.name for u in settings.upstreams], assurance.upstream_status)
        accounts = AccountStore(engine)
        authenticator = Authenticator(
            accounts, prefix=settings.key_prefix, secret=_key_secret(settings)
        )
        receipts = ReceiptService(
            ReceiptLog(engine, writer=writer),
            account_secret=_key_secret(settings),
            quoter=ConfigfsTsm(settings.tsm_report_dir),
        )
        if tracing is None:
            gw_authenticator: KeyAuthenticator = authenticator
            clients: Mapping[str, UpstreamClient | TracedUpstream] = live.clients
            meter: Meter = billing.meter
            trace: Trace = NO_TRACE
        else:  # the same parts, each step in its span
            gw_authenticator = tracing.authenticator(authenticator)
            clients = tracing.upstreams(live.clients)
            meter, trace = tracing.meter(billing.meter), tracing
        gw = Gateway(
            settings=settings,
            authenticator=gw_authenticator,
            limiter=limiter,
            catalog=catalog,
            attestation=assurance,
            chat=ChatService(
                catalog,
                assurance,
                clients,
                meter=meter,
                limiter=limiter,
                trace=trace,
                sealed=live.clients,
            ),
            billing=billing,
            embeddings=EmbeddingsService(
                catalog, assurance, clients, meter=meter, limiter=limiter, trace=trace
            ),
            metrics=metrics,
            receipts=receipts,
            readiness=Readiness(
                {
                    "database": _database_check(engine),
                    "catalog": _catalog_check(catalog),
                    "ratelimit": _limiter_check(limiter),
                    "attestation": _attestation_check(settings, assurance),
                }
            ),
            admin=Admin(accounts, ledger, settings, settled=billing.meter.settled),
        )
        dashboard, top_up = _dashboard(settings, engine, ledger, billing, gw)
        stack.push_async_callback(top_up.aclose)
        async with ledger.running():
            await billing.reaper.reap_once()  # holds a crash left behind, before serving
            await receipts.start()
            if live.attestation is not None:  # every verdict a request may rely on is logged
                live.attestation.attestor.cache.watch(receipts.note_verdict)
            _freeze_startup_objects()
            async with (
                _background(live.sync.run()),
                _background(billing.reaper.run()),
                _background(billing.meter.run()),
                _background(authenticator.run()),
                _background(receipts.run()),
                _background(HeapTrimmer(glibc_malloc_trim()).run()),
            ):
                try:
                    yield gw, dashboard
                finally:
                    await receipts.drain()  # the receipts of the last answers are kept
    finally:
        await stack.aclose()
        await engine.dispose()


def _dashboard(
    settings: Settings, engine: AsyncEngine, ledger: Ledger, billing: Billing, gw: Gateway
) -> tuple[Dashboard, StripeTopUp]:
    """The dashboard's services: the console over the store, Stripe for top-ups."""
    store = DashboardStore(engine)
    secret = _key_secret(settings)
    top_up = StripeTopUp(settings.stripe, store)
    dashboard = Dashboard(
        console=AccountConsole(
            settings,
            accounts=AccountStore(engine),
            store=store,
            ledger=ledger,
            billing=billing,
            catalog=gw.catalog,
            attestation=gw.attestation,
            limiter=gw.limiter,
            key_secret=secret,
        ),
        top_up=top_up,
        receipts=gw.receipts,
        csrf_secret=csrf_key(secret),
        secure_cookies=settings.environment != "development",
        session_ttl_s=settings.dashboard_session_ttl_s,
        public_url=settings.resolved_public_url,
        checkout_origins=top_up.checkout_origins,
    )
    return dashboard, top_up


def _top_up_url(settings: Settings) -> str:
    """The billing page a 402 points to: absolute at the configured public address;
    else the path, as the listen address (0.0.0.0, a pod's) is no address for users."""
    if settings.public_url is None:
        return "/billing"
    return f"{settings.resolved_public_url}/billing"


def _freeze_startup_objects() -> None:
    """Everything built so far lives as long as the process: taken out of the
    collector's view, a full collection does not walk it mid-request (a tail
    latency spike of milliseconds on a loaded heap)."""
    gc.collect()
    gc.freeze()


def _attestation_check(settings: Settings, assurance: UpstreamAssurance) -> Check:
    """Not ready when no upstream is attested (a chutes upstream: none of its chutes)."""

    async def check() -> str | None:
        failing = {
            u.name: status.reason
            for u in settings.upstreams
            if not (status := assurance.upstream_status(u.name)).passed
        }
        if failing and len(failing) == len(settings.upstreams):
            return "no upstream is attested: " + "; ".join(f"{k}: {v}" for k, v in failing.items())
        return None

    return check


def _database_check(engine: AsyncEngine) -> Check:
    async def check() -> str | None:
        await ping(engine)
        return None

    return check


def _catalog_check(catalog: Catalog) -> Check:
    async def check() -> str | None:
        return None if catalog.servable_ids() else "no confidential model is servable"

    return check


def _rate_limiter(settings: Settings) -> RateLimiter:
    if settings.redis_url is None:
        return LocalRateLimiter()
    return RedisRateLimiter(
        settings.redis_url,
        replicas=settings.workers * settings.replicas,
        timeout_s=settings.redis_timeout_s,
    )


def _limiter_check(limiter: RateLimiter) -> Check:
    async def check() -> str | None:
        if limiter.degraded:
            return "degraded: Redis unreachable, each process enforces limit / processes"
        return None

    return check


def _key_secret(settings: Settings) -> bytes:
    if settings.key_hash_secret is None:
        raise ConfigError("key_hash_secret: not set")
    return settings.key_hash_secret.get_secret_value().encode()


@contextlib.asynccontextmanager
async def _background(coro: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    task = asyncio.ensure_future(coro)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def app_from_environment() -> Starlette:
    """The factory `teegate serve` hands uvicorn, so each worker builds its own app."""
    settings = load_settings()
    configure_logging(json_lines=True, level=settings.logging_level)
    return create_app(settings)
