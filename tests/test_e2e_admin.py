"""The admin API end to end, and who may open which door.

An operator creates an account, credits it, issues a key with limits, and the key is
used with the official openai SDK; the operator then reads the usage, changes the
key's policy and limit, rotates and revokes it, each seen by the next request. Only
the admin token opens /admin/v1 and /metrics; an API key opens neither, and the admin
token is no API key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.routing import Route

from teegate import apikeys
from teegate.api.admin import routes as admin_routes
from teegate.api.openapi import build_openapi
from teegate.billing import usd_to_nano
from tests.support.gateway import (
    ADMIN_TOKEN,
    Gateway,
    SettingsFor,
    running_gateway,
)

R1 = "deepseek-ai/DeepSeek-R1-0528-TEE"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def admin(gateway: Gateway, method: str, path: str, status: int = 200, **kw: Any) -> Any:
    response = httpx.request(method, f"{gateway.url}/admin/v1/{path}", headers=ADMIN, **kw)
    assert response.status_code == status, response.text
    return response.json()


def eventually(check: Callable[[], bool]) -> None:
    """Until `check` holds: a key's change reaches the request path within a second."""
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "the change never reached the request path"
        time.sleep(0.1)


def refused_with(client: openai.OpenAI, model: str = R1) -> str | None:
    try:
        client.chat.completions.create(model=model, messages=HELLO, max_tokens=5)
    except openai.APIStatusError as exc:
        return str(exc.code)
    return None


def test_an_operator_runs_an_account_through_the_admin_api(gateway: Gateway) -> None:
    account = admin(gateway, "POST", "accounts", 201, json={"name": "ops", "credit_usd": "5"})
    assert (account["name"], account["balance"], account["balance_nano"]) == ("ops", "5", 5 * 10**9)
    credited = admin(gateway, "POST", "accounts/ops/credit", json={"usd": "2.5"})
    assert (credited["balance"], credited["balance_nano"]) == ("7.5", 7_500_000_000)
    budgeted = admin(gateway, "PUT", "accounts/ops/budgets", json={"budgets": {"month": "100"}})
    assert [(b["scope"], b["period"], b["limit"]) for b in budgeted["budgets"]] == [
        ("account", "month", "100")
    ]
    dropped = admin(gateway, "PUT", "accounts/ops/budgets", json={"budgets": {"month": None}})
    assert dropped["budgets"] == []

    created = admin(
        gateway,
        "POST",
        "keys",
        201,
        json={"account": "ops", "name": "ci", "rpm": 100, "tpm": 100_000, "budgets": {"day": "1"}},
    )
    secret = created["key"]
    assert secret.startswith(gateway.settings.key_prefix) and created["hint"].endswith(secret[-4:])
    assert (created["rpm"], created["policy"]["tpm"], created["active"]) == (100, 100_000, True)
    assert [(b["scope"], b["period"], b["limit"]) for b in created["budgets"]] == [
        ("key", "day", "1")
    ]
    shown = httpx.get(f"{gateway.url}/admin/v1/keys/{created['id']}", headers=ADMIN)
    assert secret not in shown.text and "key" not in shown.json()  # the secret, once only

    client = gateway.client(api_key=secret)
    raw = client.chat.completions.with_raw_response.create(model=R1, messages=HELLO, max_tokens=20)
    raw.parse()
    request_id = raw.headers["x-request-id"]

    (record,) = admin(gateway, "GET", "usage", params={"account": "ops"})["data"]
    assert (record["id"], record["account"], record["model"]) == (request_id, "ops", R1)
    assert record["status"] == "ok" and record["tokens_completion"] > 0
    cost = usd_to_nano(record["total_cost"])
    assert cost > 0
    after = admin(gateway, "GET", "accounts/ops")
    assert after["balance_nano"] == 7_500_000_000 - cost
    assert (after["held"], after["available"]) == ("0", after["balance"])
    listed = admin(gateway, "GET", "keys", params={"account": "ops"})["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    (key_budget,) = admin(gateway, "GET", f"keys/{created['id']}")["budgets"]
    assert usd_to_nano(key_budget["spent"]) == cost

    # limits and policy: each change is seen by the next requests
    admin(gateway, "PATCH", f"keys/{created['id']}", json={"models": ["Qwen/"]})
    eventually(lambda: refused_with(client) == "model_not_allowed")
    admin(gateway, "PATCH", f"keys/{created['id']}", json={"models": None, "rpm": 1})
    eventually(lambda: refused_with(client) == "rate_limit_exceeded")
    patched = admin(gateway, "GET", f"keys/{created['id']}")
    assert (patched["rpm"], patched["policy"]["models"], patched["policy"]["tpm"]) == (
        1,
        None,
        100_000,  # not named in the update: kept
    )

    rotated = admin(gateway, "POST", f"keys/{created['id']}/rotate", 201)
    assert rotated["replaces"] == created["id"] and rotated["key"] != secret
    assert (rotated["rpm"], rotated["policy"]["tpm"]) == (1, 100_000)
    eventually(lambda: refused_with(client) == "invalid_api_key")
    fresh = gateway.client(api_key=rotated["key"])
    assert refused_with(fresh) is None

    revoked = admin(gateway, "POST", f"keys/{rotated['id']}/revoke")
    assert revoked["active"] is False and revoked["revoked_at"] is not None
    eventually(lambda: refused_with(fresh) == "invalid_api_key")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "accounts", {"name": "acme"}, 409, "conflict"),
        ("POST", "accounts", {"name": ""}, 400, "invalid_value"),
        ("POST", "accounts/acme/credit", {"usd": 2.5}, 400, "invalid_value"),  # a float
        ("POST", "accounts/acme/credit", {"usd": "0.0000000001"}, 400, "invalid_value"),
        ("POST", "accounts/nobody/credit", {"usd": "1"}, 404, "not_found"),
        ("PUT", "accounts/acme/budgets", {"budgets": {"week": "1"}}, 400, "invalid_value"),
        ("POST", "keys", {"account": "nobody"}, 404, "not_found"),
        ("POST", "keys", {"account": "acme", "models": ["a*b"]}, 400, "invalid_value"),
        ("POST", "keys", {"account": "acme", "rpm": 0}, 400, "invalid_value"),
        (
            "POST",
            "keys",
            {"account": "acme", "attestation": {"tcb": ["OutOfDate"]}},
            400,
            "invalid_value",
        ),  # looser than the gateway's policy
        ("GET", "keys/key_nope", None, 404, "not_found"),
        ("GET", "usage?since=yesterday", None, 400, "invalid_value"),
        ("GET", "usage?account=nobody", None, 404, "not_found"),
    ],
)
def test_bad_admin_requests_answer_in_the_envelope(
    gateway: Gateway, method: str, path: str, body: Any, status: int, code: str
) -> None:
    error = admin(gateway, method, path, status, json=body)["error"]
    assert (error["code"], error["status"]) == (code, status)
    assert error["message"]


def test_only_the_admin_token_opens_admin_and_metrics(gateway: Gateway) -> None:
    api_key = {"Authorization": f"Bearer {gateway.key}"}
    for headers in (
        {},
        api_key,
        {"Authorization": "Bearer tgadm_wrong"},
        {"Authorization": ADMIN_TOKEN},
    ):
        for path in ("/admin/v1/accounts", "/admin/v1/usage", "/metrics"):
            refused = httpx.get(f"{gateway.url}{path}", headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.json()["error"]["code"] == "invalid_admin_token"
        refused = httpx.post(
            f"{gateway.url}/admin/v1/accounts", headers=headers, json={"name": "x"}
        )
        assert refused.status_code == 401
    assert "x" not in {a["name"] for a in admin(gateway, "GET", "accounts")["data"]}
    assert httpx.get(f"{gateway.url}/metrics", headers=ADMIN).status_code == 200


def test_the_admin_token_is_no_api_key(gateway: Gateway) -> None:
    client = gateway.client(api_key=ADMIN_TOKEN)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=R1, messages=HELLO)
    assert info.value.code == "invalid_api_key"
    for path in ("/v1/models", "/v1/key", "/v1/usage", "/v1/balance"):
        refused = httpx.get(f"{gateway.url}{path}", headers=ADMIN)
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_api_key")


def test_readyz_tells_anyone_whether_and_operators_why(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    anyone = httpx.get(f"{gateway.url}/readyz").json()
    operator = httpx.get(f"{gateway.url}/readyz", headers=ADMIN).json()
    assert anyone["ready"] is operator["ready"] is True
    assert set(anyone["checks"]) == set(operator["checks"]) == {
        "database", "catalog", "ratelimit", "attestation",
    }  # fmt: skip


@pytest.fixture(scope="module")
def no_admin(attested: SettingsFor) -> Iterator[Gateway]:
    """A gateway with no admin token, and a scrape-only metrics token."""
    settings = attested(
        "no-admin",
        admin_token_sha256=None,
        metrics_token_sha256=apikeys.token_sha256("tgadm_scrape-only"),
    )
    with running_gateway(settings, "acme") as gateway:
        yield gateway


def test_without_an_admin_token_the_admin_api_does_not_exist(no_admin: Gateway) -> None:
    scrape = {"Authorization": "Bearer tgadm_scrape-only"}
    for headers in ({}, ADMIN, scrape):
        missing = httpx.get(f"{no_admin.url}/admin/v1/accounts", headers=headers)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert httpx.get(f"{no_admin.url}/metrics", headers=ADMIN).status_code == 401
    assert httpx.get(f"{no_admin.url}/metrics", headers=scrape).status_code == 200
    why = httpx.get(f"{no_admin.url}/readyz", headers=scrape).json()["checks"]
    assert set(why.values()) == {"ok"}


def test_every_admin_route_is_in_the_published_openapi() -> None:
    published = build_openapi()
    documented = {(path, method) for path, ops in published["paths"].items() for method in ops}
    served = {
        (route.path, method.lower())
        for route in admin_routes()
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served <= documented
    for path, method in served:
        assert published["paths"][path][method]["security"] == [{"adminToken": []}]
