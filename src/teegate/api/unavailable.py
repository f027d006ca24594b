"""The switch of every non-chat endpoint: a modality's routes are closed, answering
503 not_available, while no attested confidential model of that modality is in the
live catalog (`catalog.serves`), and never forwarded anywhere.

Embeddings are built (`api.embeddings`); the other modalities are the place a
future confidential variant plugs in: its route replaces the entry below with a
handler that asks the same switch first, as `api.embeddings` does.

The key is checked first, as on every other route, so a caller learns of a bad key
before being told a modality is missing.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from teegate.api._state import authorize, gateway
from teegate.catalog import serves
from teegate.errors import NotAvailable

EMBEDDINGS_PATH = "/v1/embeddings"
UNBUILT_PATHS = (
    ("/v1/images/{rest:path}", "images"),
    ("/v1/audio/{rest:path}", "audio"),
    ("/v1/video{rest:path}", "video"),
    ("/v1/moderations", "moderations"),
    ("/v1/fine_tuning/{rest:path}", "fine_tuning"),
    ("/v1/fine-tuning/{rest:path}", "fine_tuning"),
)
"""Modalities teegate does not relay yet, by path: 503 whatever the switch says."""
UNBUILT_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
"""Their routes answer 503 to every method OpenAI's API uses on them."""

UNAVAILABLE_PATHS = (EMBEDDINGS_PATH, *(path for path, _ in UNBUILT_PATHS))
"""Every path on a switch: 503 not_available while its modality is closed."""


def closed(path: str) -> NotAvailable:
    return NotAvailable(
        f"{path} is not available: no hardware-attested (TEE) upstream offers "
        "this modality, and teegate never falls back to a non-confidential one."
    )


class Unbuilt:
    """The route of a modality with no relay yet: closed, or open with nothing to
    serve it, it answers 503."""

    def __init__(self, modality: str) -> None:
        self.modality = modality

    async def not_available(self, request: Request) -> Response:
        await authorize(request)
        gw = gateway(request)
        if not serves(gw.catalog, gw.attestation, self.modality):
            raise closed(request.url.path)
        raise NotAvailable(
            f"{request.url.path} is not available yet: a confidential {self.modality} model "
            "is attested, but teegate does not relay this modality."
        )
