"""Pooled HTTP clients to confidential upstreams and the SSE parsing they need."""

from teegate.errors import SSEError
from teegate.upstream._client import Listing, UpstreamClient, UpstreamStream
from teegate.upstream._sse import SSEDecoder

__all__ = ["Listing", "SSEDecoder", "SSEError", "UpstreamClient", "UpstreamStream"]
