"""Modalities with no attested upstream: refused outright, never forwarded anywhere."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from teegate.errors import NotAvailable

UNAVAILABLE_PATHS = (
    "/v1/embeddings",
    "/v1/images/{rest:path}",
    "/v1/audio/{rest:path}",
    "/v1/video{rest:path}",
    "/v1/moderations",
    "/v1/fine_tuning/{rest:path}",
    "/v1/fine-tuning/{rest:path}",
)


async def not_available(request: Request) -> Response:
    raise NotAvailable(
        f"{request.url.path} is not available: no hardware-attested (TEE) upstream offers "
        "this modality, and teegate never falls back to a non-confidential one."
    )
