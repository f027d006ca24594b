"""Pooled HTTP clients to confidential upstreams and the SSE parsing they need."""

from teegate.upstream._client import Listing, UpstreamClient, UpstreamStream
from teegate.upstream._sse import SSEDecoder, SSEError

__all__ = ["Listing", "SSEDecoder", "SSEError", "UpstreamClient", "UpstreamStream"]
