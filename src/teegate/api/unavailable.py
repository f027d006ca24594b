"""Modalities with no attested upstream: refused outright, never forwarded anywhere.

The key is checked first, as on every other route, so a caller learns of a bad key
before being told a modality is missing.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._state import authorize
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
    await authorize(request)
    raise NotAvailable(
        f"{request.url.path} is not available: no hardware-attested (TEE) upstream offers "
        "this modality, and teegate never falls back to a non-confidential one."
    )
