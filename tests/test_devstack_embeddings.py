"""The devstack's embeddings: deterministic unit vectors, `dimensions`, usage, both
encodings, the faults of a whole answer, and the switch that serves them at all."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from teegate.devstack import DevstackConfig, build_app
from tests.support.openai_schemas import validate
from tests.support.servers import ServerThread, serving

MODEL = "Qwen/Qwen3-Embedding-0.6B-TEE"
TWIN = "Qwen/Qwen3-Embedding-0.6B"
PATH = "/v1/embeddings"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    config = DevstackConfig(embeddings=True, first_token_delay_s=0.2)
    with serving(build_app(config)) as running:
        yield running


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client
        client.post("/admin/reset").raise_for_status()


def embed(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = http.post(PATH, json={"model": MODEL, "input": "hello", **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def vectors(body: dict[str, Any]) -> list[list[float]]:
    return [item["embedding"] for item in body["data"]]


def test_vectors_are_unit_deterministic_and_closer_for_shared_words(http: httpx.Client) -> None:
    texts = ["the quick brown fox", "the quick brown fox", "a quick brown dog", "tax law"]
    body = embed(http, input=texts, encoding_format="float")
    validate(body, "CreateEmbeddingResponse")
    same, twin, near, far = vectors(body)
    assert same == twin
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0) for v in (same, near, far))
    assert len(same) == 1024

    def cos(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    assert cos(same, near) > 0.3 > abs(cos(same, far))


def test_dimensions_and_base64(http: httpx.Client) -> None:
    floats = vectors(embed(http, input=["x y"], dimensions=16))[0]
    packed = embed(http, input=["x y"], dimensions=16, encoding_format="base64")
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack("<16f", raw)
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(floats, decoded, strict=True))
    too_many = http.post(PATH, json={"model": MODEL, "input": "x", "dimensions": 4096})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "dimensions"


def test_usage_fits_the_gateways_bound(http: httpx.Client) -> None:
    usage = embed(http, input=["abcdefgh", "é"])["usage"]
    assert usage == {"prompt_tokens": (2 + 1) + (1 + 1), "total_tokens": 5}
    assert embed(http, input=[[1, 2, 3], [4]])["usage"]["prompt_tokens"] == 4


def test_only_embedding_models_embed(http: httpx.Client) -> None:
    chat = http.post(PATH, json={"model": "deepseek-ai/DeepSeek-V3-0324-TEE", "input": "x"})
    assert chat.status_code == 404
    assert http.post(PATH, json={"model": TWIN, "input": "x"}).status_code == 200


def test_requests_are_counted_refusals_included(http: httpx.Client) -> None:
    http.post("/admin/reset")
    http.post(PATH, json={"model": "nope", "input": "x"})
    embed(http)
    assert http.get("/admin/stats").json()["embeddings_requests"] == 2


def test_faults_apply(http: httpx.Client) -> None:
    def fault(name: str) -> None:
        http.put("/admin/faults", json={"faults": [name]}).raise_for_status()

    fault("http-500")
    assert http.post(PATH, json={"model": MODEL, "input": "x"}).status_code == 500
    fault("no-usage")
    assert "usage" not in embed(http)
    fault("garbage-sse")
    with pytest.raises(ValueError):
        http.post(PATH, json={"model": MODEL, "input": "x"}).json()
    fault("drop-mid-stream")
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(PATH, json={"model": MODEL, "input": "x"})
    fault(f"flag-off={MODEL}")
    flags = {m["id"]: m["confidential_compute"] for m in http.get("/v1/models").json()["data"]}
    assert flags[MODEL] is False


def test_without_embeddings_the_models_are_not_offered() -> None:
    with serving(build_app(DevstackConfig())) as running:
        ids = {m["id"] for m in httpx.get(running.url + "/v1/models").json()["data"]}
        refused = httpx.post(running.url + PATH, json={"model": MODEL, "input": "x"})
    assert MODEL not in ids
    assert TWIN not in ids
    assert refused.status_code == 404
