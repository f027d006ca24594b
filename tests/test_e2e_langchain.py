"""LangChain's `OpenAIEmbeddings` pointed at teegate: a RAG pipeline's first step, offline.

`check_embedding_ctx_length=False` makes LangChain send the texts as they are; with it
on, LangChain would first tokenize them with tiktoken, whose encodings are fetched
from the internet (unavailable to the tests, and not needed: teegate bounds and
checks the inputs itself).
"""

from __future__ import annotations

import math

from langchain_openai import OpenAIEmbeddings
from pydantic import SecretStr

from tests.support.gateway import EMBEDDING_MODEL, Devstack, Gateway, wait_for

DOCUMENTS = [
    "Confidential inference runs the model inside a TDX enclave.",
    "The enclave's TDX quote binds its TLS key.",
    "Sourdough needs a long, cold fermentation.",
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def embeddings(
    gateway: Gateway, chunk_size: int = 1000, dimensions: int | None = None
) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        model=EMBEDDING_MODEL,
        openai_api_base=f"{gateway.url}/v1",
        openai_api_key=SecretStr(gateway.key),
        check_embedding_ctx_length=False,
        max_retries=0,
        chunk_size=chunk_size,
        dimensions=dimensions,
    )


def test_langchain_embeds_documents_and_a_query(embeddings_rig: tuple[Gateway, Devstack]) -> None:
    gateway, upstream = embeddings_rig
    upstream.admin("POST", "reset")
    wait_for(gateway, lambda ids: EMBEDDING_MODEL in ids)
    client = embeddings(gateway)
    vectors = client.embed_documents(DOCUMENTS)
    query = client.embed_query("Which enclave binds a TLS key?")
    assert len(vectors) == len(DOCUMENTS)
    assert all(
        len(v) == 1024 and math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5)
        for v in vectors
    )
    scores = [cosine(query, v) for v in vectors]
    assert max(range(len(scores)), key=scores.__getitem__) == 1  # most words in common
    assert scores[2] < scores[0]  # bread shares none
    assert client.embed_query(DOCUMENTS[1]) == vectors[1]
    assert upstream.embeddings_requests() == 3


def test_langchain_batches_and_dimensions(embeddings_rig: tuple[Gateway, Devstack]) -> None:
    gateway, upstream = embeddings_rig
    upstream.admin("POST", "reset")
    wait_for(gateway, lambda ids: EMBEDDING_MODEL in ids)
    client = embeddings(gateway, chunk_size=2, dimensions=128)
    vectors = client.embed_documents(DOCUMENTS)
    assert [len(v) for v in vectors] == [128, 128, 128]
    assert upstream.embeddings_requests() == 2  # two batches of at most two
