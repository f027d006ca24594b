"""Pooled HTTP clients to confidential upstreams and the SSE parsing they need."""

from teegate.upstream._client import Listing, UpstreamClient, UpstreamStream
from teegate.upstream._sse import SSEError, iter_sse_data

__all__ = ["Listing", "SSEError", "UpstreamClient", "UpstreamStream", "iter_sse_data"]
