"""/v1/embeddings end to end through the official SDK: a gw attesting the simulated
enclave, which serves a confidential embedding model and its non-TEE twin.

The endpoint's switch follows the live catalog; each input form and both encodings
arrive as the SDK types them; the charge is the upstream's usage at the marked-up
price; refusals (not confidential, no balance, a closed endpoint) reach no upstream.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import openai
import pytest
from structlog.testing import capture_logs

from teegate.apikeys import KeyPolicy
from teegate.auth import issue_key
from teegate.billing import Rates, cost_nano, nano_to_usd, usd_to_nano
from teegate.devstack import DevstackConfig, SimulatedEnclave, build_app
from teegate.embeddings import MAX_INPUTS, MAX_TOTAL_TOKENS
from teegate.store import AccountStore
from tests.support.gateway import (
    EMBEDDING_MODEL,
    KEY_SECRET,
    Devstack,
    Gateway,
    attested_settings,
    model_ids,
    running_gateway,
    serve_enclave,
    wait_for,
    with_store,
)
from tests.support.openai_schemas import validate

EMBED = EMBEDDING_MODEL
TWIN = "Qwen/Qwen3-Embedding-0.6B"
CHAT_MODEL = "deepseek-ai/DeepSeek-V3-0324-TEE"
CONTEXT = 32768
DOCS = [
    "The enclave attests its TLS key with a TDX quote.",
    "A TDX quote binds the enclave's TLS key.",
    "Bananas are rich in potassium.",
]


@pytest.fixture
def gw(embeddings_rig: tuple[Gateway, Devstack]) -> Iterator[Gateway]:
    """The session's embeddings gateway, its upstream reset around each test and its
    model back in the catalog after it."""
    gateway, upstream = embeddings_rig
    upstream.admin("POST", "reset")
    yield gateway
    upstream.admin("POST", "reset")
    wait_for(gateway, lambda ids: EMBED in ids)


@pytest.fixture
def upstream(embeddings_rig: tuple[Gateway, Devstack]) -> Devstack:
    return embeddings_rig[1]


def decoded(embedding: list[float] | str) -> list[float]:
    """The SDK decodes base64 itself only when it chose it; asked for, it is the string."""
    if isinstance(embedding, list):
        return embedding
    packed = base64.b64decode(embedding)
    return list(struct.unpack(f"<{len(packed) // 4}f", packed))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def post(gw: Gateway, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or gw.key}"}
    return httpx.post(f"{gw.url}/v1/embeddings", json=body, headers=headers, timeout=30)


class JsonBody(Protocol):
    def json(self) -> Any: ...


def error_of(response: JsonBody) -> dict[str, Any]:
    body = response.json()
    validate(body, "ErrorResponse")
    error: dict[str, Any] = body["error"]
    return error


# --- the forms of input, the encodings, the vectors -----------------------------------------------


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_each_input_form_in_each_encoding(gw: Gateway, encoding: Any) -> None:
    client = gw.client()
    forms: list[Any] = ["one text", DOCS, [17, 4, 1999], [[17, 4], [1999, 3, 8, 0]]]
    for form in forms:
        result = client.embeddings.create(model=EMBED, input=form, encoding_format=encoding)
        expected = 1 if isinstance(form, str) or isinstance(form[0], int) else len(form)
        assert [e.index for e in result.data] == list(range(expected))
        vectors = [decoded(e.embedding) for e in result.data]
        assert all(len(v) == 1024 for v in vectors)
        assert all(math.isclose(norm(v), 1.0, rel_tol=1e-5) for v in vectors)
        assert result.model == EMBED
        assert result.usage.prompt_tokens == result.usage.total_tokens > 0


def test_the_sdk_default_base64_decodes_to_the_float_vectors(gw: Gateway) -> None:
    client = gw.client()
    default = client.embeddings.create(model=EMBED, input=DOCS)  # the SDK asks for base64
    floats = client.embeddings.create(model=EMBED, input=DOCS, encoding_format="float")
    for packed, plain in zip(default.data, floats.data, strict=True):
        assert all(
            math.isclose(x, y, abs_tol=1e-6)
            for x, y in zip(packed.embedding, plain.embedding, strict=True)
        )


def test_float_body_is_an_sdk_create_embedding_response(gw: Gateway) -> None:
    response = post(gw, {"model": EMBED, "input": DOCS, "encoding_format": "float"})
    assert response.status_code == 200
    validate(response.json(), "CreateEmbeddingResponse")
    assert response.headers["x-tee-attestation"]
    assert response.headers["x-ratelimit-limit"] == "1000"


def test_equal_inputs_equal_vectors_and_shared_words_are_closer(gw: Gateway) -> None:
    client = gw.client()
    data = client.embeddings.create(model=EMBED, input=[*DOCS, DOCS[0]]).data
    vectors = [e.embedding for e in data]
    assert vectors[3] == vectors[0]
    assert cosine(vectors[0], vectors[1]) > 0.3
    assert abs(cosine(vectors[0], vectors[2])) < cosine(vectors[0], vectors[1])


def test_dimensions_are_honoured(gw: Gateway) -> None:
    result = gw.client().embeddings.create(model=EMBED, input=DOCS, dimensions=256)
    assert all(len(e.embedding) == 256 for e in result.data)
    assert math.isclose(norm(result.data[0].embedding), 1.0, rel_tol=1e-5)


def test_user_is_accepted(gw: Gateway) -> None:
    result = gw.client().embeddings.create(model=EMBED, input="hi", user="user-42")
    assert len(result.data) == 1


def test_models_list_shows_each_models_modality(gw: Gateway) -> None:
    response = httpx.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer {gw.key}"})
    validate(response.json(), "ListModelsResponse")
    modality = {m["id"]: m["modality"] for m in response.json()["data"]}
    assert modality[EMBED] == "embeddings"
    assert modality[CHAT_MODEL] == "chat"
    assert TWIN not in modality


# --- the switch -----------------------------------------------------------------------------------


def test_closed_until_a_sync_brings_the_model_and_closed_again_when_it_goes(
    gw: Gateway, upstream: Devstack
) -> None:
    client = gw.client(max_retries=2)
    upstream.set_faults(f"flag-off={EMBED}")
    wait_for(gw, lambda ids: EMBED not in ids)
    with pytest.raises(openai.InternalServerError) as closed:
        client.embeddings.create(model=EMBED, input="hello")
    assert closed.value.status_code == 503
    assert closed.value.response.headers["x-should-retry"] == "false"
    assert error_of(closed.value.response)["code"] == "not_available"
    assert upstream.embeddings_requests() == 0

    upstream.set_faults()
    wait_for(gw, lambda ids: EMBED in ids)
    assert len(client.embeddings.create(model=EMBED, input="hello").data) == 1
    assert upstream.embeddings_requests() == 1

    upstream.set_faults(f"flag-off={EMBED}")
    wait_for(gw, lambda ids: EMBED not in ids)
    for form in ("hello", ["a", "b"], [1, 2, 3]):
        with pytest.raises(openai.InternalServerError):
            client.embeddings.create(model=EMBED, input=form)
    assert upstream.embeddings_requests() == 1
    assert CHAT_MODEL in model_ids(gw)  # chat is on its own switch


def test_other_modalities_stay_closed_with_embeddings_open(gw: Gateway) -> None:
    for path in ("/v1/images/generations", "/v1/audio/speech", "/v1/moderations"):
        response = httpx.post(
            f"{gw.url}{path}",
            json={"model": EMBED, "input": "x"},
            headers={"Authorization": f"Bearer {gw.key}"},
        )
        assert response.status_code == 503
        assert error_of(response)["code"] == "not_available"


# --- the gate -------------------------------------------------------------------------------------


def test_the_non_tee_twin_is_refused_with_a_suggestion(gw: Gateway, upstream: Devstack) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gw.client().embeddings.create(model=TWIN, input="hello")
    error = error_of(info.value.response)
    assert error["code"] == "model_not_confidential"
    assert error["param"] == "model"
    assert f"Use '{EMBED}' instead" in error["message"]
    assert upstream.embeddings_requests() == 0


def test_a_model_of_the_other_modality_is_refused_on_each_endpoint(
    gw: Gateway, upstream: Devstack
) -> None:
    with pytest.raises(openai.BadRequestError) as embedding_chat:
        gw.client().embeddings.create(model=CHAT_MODEL, input="hello")
    assert error_of(embedding_chat.value.response)["code"] == "model_not_supported"
    with pytest.raises(openai.BadRequestError) as chatting_embedder:
        gw.client().chat.completions.create(
            model=EMBED, messages=[{"role": "user", "content": "hi"}]
        )
    assert error_of(chatting_embedder.value.response)["code"] == "model_not_supported"
    stats = upstream.admin("GET", "stats")
    assert stats["embeddings_requests"] == stats["chat_requests"] == 0


def test_unknown_model_is_404(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError):
        gw.client().embeddings.create(model="no/such-embedder", input="hello")


# --- billing --------------------------------------------------------------------------------------


def test_the_charge_is_the_upstreams_usage_at_the_marked_up_price(gw: Gateway) -> None:
    client = gw.client()
    pricing = client.models.retrieve(EMBED).model_dump()["pricing"]
    rates = Rates(usd_to_nano(pricing["prompt"]), usd_to_nano(pricing["completion"]))
    headers = {"Authorization": f"Bearer {gw.key}"}
    before = httpx.get(f"{gw.url}/v1/balance", headers=headers).json()
    raw = client.embeddings.with_raw_response.create(model=EMBED, input=DOCS * 40)
    usage = raw.parse().usage
    record = httpx.get(
        f"{gw.url}/v1/generation",
        headers=headers,
        params={"id": raw.headers["x-request-id"]},
    ).json()["data"]
    charge = cost_nano(usage.prompt_tokens, 0, rates)
    assert charge > 0
    assert record["tokens_prompt"] == usage.prompt_tokens
    assert record["tokens_completion"] == 0
    assert record["settled_by"] == "usage"
    assert record["total_cost"] == nano_to_usd(charge)
    assert record["model"] == EMBED
    after = httpx.get(f"{gw.url}/v1/balance", headers=headers).json()
    assert usd_to_nano(before["balance"]) - usd_to_nano(after["balance"]) == charge
    assert after["held"] == "0"


def test_token_arrays_are_held_exactly(gw: Gateway) -> None:
    """The hold of a token array is its length plus the special tokens: the
    upstream's count (its length) fits it, so the charge is never capped."""
    raw = gw.client().embeddings.with_raw_response.create(
        model=EMBED, input=[[5] * 3000, [6] * 1000]
    )
    assert raw.parse().usage.prompt_tokens == 4000
    record = httpx.get(
        f"{gw.url}/v1/generation",
        headers={"Authorization": f"Bearer {gw.key}"},
        params={"id": raw.headers["x-request-id"]},
    ).json()["data"]
    assert record["capped"] is False
    assert record["tokens_prompt"] == 4000


def test_no_balance_is_402_before_any_upstream_call(gw: Gateway, upstream: Devstack) -> None:
    with_store(gw.settings, lambda store: store.create_account("broke"))
    key = gw.issue_key(account="broke")
    with pytest.raises(openai.APIStatusError) as info:
        gw.client(api_key=key).embeddings.create(model=EMBED, input="hello")
    assert info.value.status_code == 402
    error = error_of(info.value.response)
    assert error["code"] == "insufficient_balance"
    assert "its input tokens" in error["message"]
    assert upstream.embeddings_requests() == 0


# --- the upstream's faults ------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["http-500", "drop-mid-stream", "garbage-sse"])
def test_an_upstream_failure_is_502_and_costs_nothing(
    gw: Gateway, upstream: Devstack, fault: str
) -> None:
    upstream.set_faults(fault)
    raw = post(gw, {"model": EMBED, "input": DOCS})
    assert raw.status_code == 502
    assert error_of(raw)["code"] == "upstream_error"
    assert upstream.embeddings_requests() == 1
    record = httpx.get(
        f"{gw.url}/v1/generation",
        headers={"Authorization": f"Bearer {gw.key}"},
        params={"id": raw.headers["x-request-id"]},
    ).json()["data"]
    assert record["total_cost"] == "0"
    assert record["status"] == "upstream_error"


def test_no_usage_is_charged_at_the_hold(gw: Gateway, upstream: Devstack) -> None:
    upstream.set_faults("no-usage")
    raw = gw.client().embeddings.with_raw_response.create(model=EMBED, input=[[1, 2, 3]])
    record = httpx.get(
        f"{gw.url}/v1/generation",
        headers={"Authorization": f"Bearer {gw.key}"},
        params={"id": raw.headers["x-request-id"]},
    ).json()["data"]
    assert record["settled_by"] == "fallback"
    assert record["tokens_prompt"] == 3 + 2  # the tokens, exactly, and the special tokens


def test_a_slow_upstream_still_answers(gw: Gateway, upstream: Devstack) -> None:
    upstream.set_faults("slow-first-token")
    assert len(gw.client().embeddings.create(model=EMBED, input="hello").data) == 1


# --- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": ["x"] * (MAX_INPUTS + 1)}, "input", "array_above_max_length"),
        ({"input": []}, "input", "empty_array"),
        ({"input": ""}, "input", "invalid_value"),
        ({"input": ["a", 1]}, "input[1]", "invalid_type"),
        ({"input": [[1], [-1]]}, "input[1]", "invalid_type"),
        ({"input": [[0] * (CONTEXT + 1)]}, "input[0]", "context_length_exceeded"),
        ({"input": ["x", "y" * (CONTEXT * 4 + 1)]}, "input[1]", "context_length_exceeded"),
        ({"input": [[0] * 30_000] * 10}, "input", "max_tokens_per_request"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
        ({"input": "x", "dimensions": 0}, "dimensions", "invalid_value"),
        ({"input": "x", "user": 7}, "user", "invalid_type"),
        ({}, "input", "missing_required_parameter"),
    ],
)
def test_limits_and_bad_params_are_400_naming_the_param(
    gw: Gateway, upstream: Devstack, body: dict[str, Any], param: str, code: str
) -> None:
    assert MAX_TOTAL_TOKENS < 300_020
    response = post(gw, {"model": EMBED, **body})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert upstream.embeddings_requests() == 0


def test_inputs_reach_no_log_and_no_error(gw: Gateway, upstream: Devstack) -> None:
    secret = "patient 4711 has a rare condition"
    upstream.set_faults("http-500")
    with capture_logs() as logs:
        response = post(gw, {"model": EMBED, "input": [secret, secret * 40_000]})
        refused = post(gw, {"model": TWIN, "input": secret})
    assert secret not in response.text and secret not in refused.text
    assert all(secret not in repr(entry) for entry in logs)


# --- the pinned channel ---------------------------------------------------------------------------


def test_a_tls_key_other_than_the_attested_one_is_refused(
    enclave: SimulatedEnclave,
    enclave_files: Path,
    attestation_services: Devstack,
    tmp_path: Path,
) -> None:
    """Embeddings go over the channel pinned to the attested key, as chat does: a swapped
    key is refused (model_not_confidential), the verdict dropped, so the endpoint
    closes (its switch reads the verdict), and nothing more reaches the upstream. An
    enclave of its own: the verdict it loses would close the shared rig's endpoint."""
    own = SimulatedEnclave(pki=enclave.pki)
    app = build_app(DevstackConfig(embeddings=True), enclave=own)
    with serve_enclave(app, own, tmp_path / "tls") as server:
        upstream = Devstack(server.url)
        settings = attested_settings(tmp_path, upstream, attestation_services, enclave_files)
        with running_gateway(settings, "swap") as gateway:
            wait_for(gateway, lambda ids: EMBED in ids)
            client = gateway.client()
            assert client.embeddings.create(model=EMBED, input="hello").data
            upstream.set_faults("tls-key-swap")

            def call(_: int) -> str:
                try:
                    client.embeddings.create(model=EMBED, input="hello")
                except openai.APIStatusError as exc:
                    return str(exc.code)
                return "ok"

            with ThreadPoolExecutor(6) as pool:  # new connections meet the swapped key
                outcomes = list(pool.map(call, range(6)))
            assert "model_not_confidential" in outcomes
            before = upstream.embeddings_requests()
            with pytest.raises(openai.APIStatusError) as info:
                client.embeddings.create(model=EMBED, input="hello")
            assert (info.value.status_code, info.value.code) == (503, "not_available")
            assert upstream.embeddings_requests() == before


# --- the key's policy fences embeddings as it fences chat ---------------------------------------


def test_a_key_whose_allow_list_leaves_embeddings_out_is_refused_403(
    gw: Gateway, upstream: Devstack
) -> None:
    key = gw.issue_key(policy=KeyPolicy(models=(CHAT_MODEL,)))
    with pytest.raises(openai.PermissionDeniedError) as info:
        gw.client(api_key=key).embeddings.create(model=EMBED, input="hello")
    assert error_of(info.value.response)["code"] == "model_not_allowed"
    assert upstream.embeddings_requests() == 0


def test_a_key_token_limit_counts_the_inputs_and_is_corrected_to_the_usage(
    gw: Gateway, upstream: Devstack
) -> None:
    key = gw.issue_key(policy=KeyPolicy(tpm=40))
    client = gw.client(api_key=key)
    raw = client.embeddings.with_raw_response.create(model=EMBED, input="hello enclave")
    used = raw.parse().usage.prompt_tokens
    assert raw.headers["x-ratelimit-limit-tokens"] == "40"
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(model=EMBED, input=["x" * 200])  # bound: 202 tokens > 40
    assert "tokens per minute" in error_of(info.value.response)["message"]
    assert upstream.embeddings_requests() == 1
    remaining = int(info.value.response.headers["x-ratelimit-remaining-tokens"])
    assert remaining == 40 - used  # the first request's reservation, corrected to its usage


def test_a_key_budget_fences_embeddings(gw: Gateway, upstream: Devstack) -> None:
    async def budgeted_key(store: AccountStore) -> str:
        token, key = await issue_key(
            store, account=gw.account, prefix=gw.settings.key_prefix, secret=KEY_SECRET.encode()
        )
        await store.set_budget(gw.account, key.id, "day", 1)  # one nano-USD
        return token

    key = with_store(gw.settings, budgeted_key)
    with pytest.raises(openai.APIStatusError) as info:
        gw.client(api_key=key).embeddings.create(model=EMBED, input="hello")
    assert info.value.status_code == 402
    assert error_of(info.value.response)["code"] == "budget_exceeded"
    assert upstream.embeddings_requests() == 0
