"""The published /openapi.json describes the router exactly: every route and method
it has, and nothing it has not (issue 18, finding 8)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.routing import Route

from teegate.api import routes
from teegate.api.openapi import build_openapi, openapi_path
from tests.support.gateway import Gateway

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "options", "head", "trace"})


def _routed() -> set[tuple[str, str]]:
    pairs = set()
    for route in routes():
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                pairs.add((openapi_path(route.path), method.lower()))
    return pairs


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_and_method_is_documented_and_nothing_else() -> None:
    document = build_openapi()
    assert _documented(document) == _routed()


def test_operation_ids_are_unique_and_links_name_real_operations() -> None:
    operations = [o for item in build_openapi()["paths"].values() for o in item.values()]
    ids = [o["operationId"] for o in operations]
    assert len(ids) == len(set(ids))
    for operation in operations:
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                assert link["operationId"] in ids


def test_unavailable_routes_are_documented_for_every_method_they_answer() -> None:
    item = build_openapi()["paths"]["/v1/images/{rest}"]
    assert set(item) >= {"get", "post", "put", "patch", "delete"}
    assert "503" in item["put"]["responses"]


def test_chat_and_embeddings_document_their_bodies_and_query_routes_their_parameters() -> None:
    paths = build_openapi()["paths"]
    chat = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert chat["schema"]["required"] == ["messages", "model"]
    assert "requestBody" in paths["/v1/embeddings"]["post"]
    for path, names in {
        "/v1/usage": {"since", "limit"},
        "/v1/generation": {"id"},
        "/v1/attestation/report": {"model", "nonce"},
    }.items():
        assert {p["name"] for p in paths[path]["get"]["parameters"]} == names


def test_every_operation_documents_the_errors_of_its_route() -> None:
    for path, item in build_openapi()["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "500" in responses, (path, method)
            security = operation.get("security")
            if security == [{"adminToken": []}]:  # operators' routes: no per-key limit
                assert "401" in responses, (path, method)
            elif security != []:
                assert {"401", "429"} <= set(responses), (path, method)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "GET"])
def test_an_unavailable_route_answers_what_the_document_says(gateway: Gateway, method: str) -> None:
    response = httpx.request(
        method,
        f"{gateway.url}/v1/images/generations",
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert response.status_code == 503
    documented = build_openapi()["paths"]["/v1/images/{rest}"][method.lower()]["responses"]
    assert str(response.status_code) in documented


def test_the_served_document_is_the_built_one(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/openapi.json").json() == build_openapi()
