"""Pooled HTTP clients to confidential upstreams and the SSE parsing they need."""

from teegate.errors import SSEError
from teegate.upstream._client import (
    REQUEST_ERRORS,
    STREAM_ERRORS,
    Listing,
    SealedRelay,
    UpstreamClient,
    UpstreamStream,
)
from teegate.upstream._sse import MAX_EVENT_BYTES, SSEDecoder

__all__ = [
    "MAX_EVENT_BYTES",
    "REQUEST_ERRORS",
    "STREAM_ERRORS",
    "Listing",
    "SSEDecoder",
    "SSEError",
    "SealedRelay",
    "UpstreamClient",
    "UpstreamStream",
]
