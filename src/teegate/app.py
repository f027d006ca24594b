"""Builds the ASGI app from Settings. Wiring only: every part is made in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from teegate.api import (
    Gateway,
    RequestContextMiddleware,
    on_http_exception,
    on_teegate_error,
    on_unexpected,
    routes,
)
from teegate.assurance import UpstreamAssurance
from teegate.auth import Authenticator
from teegate.billing import Billing
from teegate.catalog import Catalog
from teegate.chat import ChatService
from teegate.config import Settings, load_settings
from teegate.embeddings import EmbeddingsService
from teegate.errors import ConfigError, TeegateError
from teegate.live import open_live_upstreams
from teegate.logs import configure_logging
from teegate.metrics import Metrics
from teegate.ratelimit import LocalRateLimiter, RateLimiter
from teegate.ratelimit.redis import RedisRateLimiter
from teegate.readiness import Check, Readiness
from teegate.store import AccountStore, Ledger, create_engine, is_current, ping


def create_app(settings: Settings) -> Starlette:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _running_gateway(settings, metrics) as gw:
            app.state.gateway = gw
            yield

    return Starlette(
        routes=routes(),
        middleware=[Middleware(RequestContextMiddleware, metrics=metrics)],
        exception_handlers={
            TeegateError: on_teegate_error,
            HTTPException: on_http_exception,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )


@contextlib.asynccontextmanager
async def _running_gateway(settings: Settings, metrics: Metrics) -> AsyncIterator[Gateway]:
    engine = create_engine(settings.resolved_database_url)
    stack = contextlib.AsyncExitStack()
    try:
        if not await is_current(engine):
            raise ConfigError("the database schema is not current: run `teegate db upgrade`")
        live = await stack.enter_async_context(open_live_upstreams(settings))
        catalog, assurance = live.catalog, live.assurance
        ledger = Ledger(engine)
        billing = Billing(
            ledger,
            hold_ttl_s=settings.hold_ttl_s,
            reaper_interval_s=settings.reaper_interval_s,
        )
        limiter = _rate_limiter(settings)
        stack.push_async_callback(limiter.aclose)
        metrics.ratelimit_degraded.set_function(lambda: float(limiter.degraded))
        metrics.catalog_models.set_function(lambda: float(len(catalog.servable_ids())))
        authenticator = Authenticator(
            AccountStore(engine), prefix=settings.key_prefix, secret=_key_secret(settings)
        )
        gw = Gateway(
            settings=settings,
            authenticator=authenticator,
            limiter=limiter,
            catalog=catalog,
            attestation=assurance,
            chat=ChatService(
                catalog, assurance, live.clients, meter=billing.meter, limiter=limiter
            ),
            billing=billing,
            embeddings=EmbeddingsService(
                catalog, assurance, live.clients, meter=billing.meter, limiter=limiter
            ),
            metrics=metrics,
            readiness=Readiness(
                {
                    "database": _database_check(engine),
                    "catalog": _catalog_check(catalog),
                    "ratelimit": _limiter_check(limiter),
                    "attestation": _attestation_check(settings, assurance),
                }
            ),
        )
        async with ledger.running():
            await billing.reaper.reap_once()  # holds a crash left behind, before serving
            _freeze_startup_objects()
            async with (
                _background(live.sync.run()),
                _background(billing.reaper.run()),
                _background(authenticator.run()),
            ):
                yield gw
    finally:
        await stack.aclose()
        await engine.dispose()


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
    configure_logging(
        json_lines=True, level=logging.getLevelNamesMapping()[settings.log_level.upper()]
    )
    return create_app(settings)
