"""Embeddings: OpenAI's `/v1/embeddings` through the same gate, hold and settlement
as chat, open only while an attested confidential embedding model is offered."""

from teegate.embeddings._request import (
    ENCODING_FORMATS,
    MAX_INPUTS,
    MAX_STRING_BYTES_PER_TOKEN,
    MAX_TOTAL_TOKENS,
    EmbeddingsRequest,
    check_against_model,
    parse_embeddings_request,
)
from teegate.embeddings._service import EmbeddingsService, EmbeddingsUpstream

__all__ = [
    "ENCODING_FORMATS",
    "MAX_INPUTS",
    "MAX_STRING_BYTES_PER_TOKEN",
    "MAX_TOTAL_TOKENS",
    "EmbeddingsRequest",
    "EmbeddingsService",
    "EmbeddingsUpstream",
    "check_against_model",
    "parse_embeddings_request",
]
