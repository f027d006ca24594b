"""What the routes reach for: built once in the lifespan, kept on `app.state.gateway`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from teegate.api._disconnect import LateWatches
from teegate.apikeys import Principal
from teegate.billing import Billing
from teegate.catalog import AttestationView, Catalog
from teegate.chat import ChatService
from teegate.config import Settings
from teegate.embeddings import EmbeddingsService
from teegate.errors import RateLimitExceeded
from teegate.metrics import Metrics
from teegate.ratelimit import RateLimiter
from teegate.readiness import Readiness
from teegate.receipts import ReceiptService

if TYPE_CHECKING:
    from teegate.api.admin import AdminOps

WATCH_AFTER_S = 0.05
"""How long an upstream call runs before a watch listens for its client leaving."""


class KeyAuthenticator(Protocol):
    """What a route needs of the (store-backed) authenticator: api/ never reaches the store."""

    async def authenticate(self, authorization: str | None) -> Principal: ...


@dataclass(slots=True)
class Gateway:
    settings: Settings
    authenticator: KeyAuthenticator
    limiter: RateLimiter
    catalog: Catalog
    attestation: AttestationView
    chat: ChatService
    metrics: Metrics
    readiness: Readiness
    billing: Billing
    embeddings: EmbeddingsService
    receipts: ReceiptService
    late_watches: LateWatches = field(default_factory=lambda: LateWatches(WATCH_AFTER_S))
    admin: AdminOps | None = None
    """The admin service behind /admin/v1 (None: the admin API is off)."""


def gateway(request: Request) -> Gateway:
    state: Gateway = request.app.state.gateway
    return state


async def authorize(request: Request) -> Principal:
    """Authenticate, then count the request against the key's limit.

    The limiter's headers are kept on the request so that every later answer,
    errors included, carries them.
    """
    gw = gateway(request)
    principal = await gw.authenticator.authenticate(request.headers.get("authorization"))
    decision = await gw.limiter.hit(principal.key_id, principal.rpm or gw.settings.default_rpm)
    request.state.ratelimit_headers = decision.headers()
    if not decision.allowed:
        raise RateLimitExceeded(
            f"Rate limit reached: {decision.limit} requests per minute for this key. "
            f"Retry after {decision.retry_after_s} seconds.",
            retry_after_s=decision.retry_after_s,
        )
    return principal


def receipt_policy(principal: Principal) -> dict[str, Any] | None:
    """The key's attestation policy as a receipt states it (None: the gateway's own)."""
    floor = principal.policy.attestation if principal.policy is not None else None
    return floor.to_json() if floor is not None else None
