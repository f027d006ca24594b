"""Pooled HTTP clients to confidential upstreams and the SSE parsing they need."""

from teegate.errors import SSEError
from teegate.upstream._client import (
    REQUEST_ERRORS,
    STREAM_ERRORS,
    Listing,
    UpstreamClient,
    UpstreamStream,
)
from teegate.upstream._sse import SSEDecoder

__all__ = [
    "REQUEST_ERRORS",
    "STREAM_ERRORS",
    "Listing",
    "SSEDecoder",
    "SSEError",
    "UpstreamClient",
    "UpstreamStream",
]
