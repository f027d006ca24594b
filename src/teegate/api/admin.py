"""`/admin/v1`: the operator's operations (accounts, credit, keys, limits, usage) over
HTTP, for automation. Thin: parse JSON, call the one admin service the `teegate`
command calls too, answer JSON.

Only the admin token opens it (`Authorization: Bearer <admin token>`, checked against
`admin_token_sha256` in constant time); an API key, like no token, is refused with
401 `invalid_admin_token`. With no admin token configured the whole prefix answers
404, as an unknown URL does. Money goes in as a decimal USD string ("25.50") and
comes out as one, beside its exact nano-USD integer: never as a float.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from teegate import apikeys
from teegate.api._body import read_json_body
from teegate.api._responses import json_response
from teegate.api._state import gateway
from teegate.apikeys import KEEP, KeyChange, KeyPolicy
from teegate.billing import MAX_USAGE_PAGE, parse_since, usd_to_nano
from teegate.catalog import AttestationFloor
from teegate.chat import parse_json_object
from teegate.errors import (
    Conflict,
    InvalidAdminToken,
    InvalidRequest,
    MoneyError,
    NotFound,
    PolicyError,
    StoreConflict,
    StoreNotFound,
)

PREFIX = "/admin/v1"
MAX_ADMIN_BODY_BYTES = 64 * 1024


class AdminOps(Protocol):
    """The admin service (`teegate.admin.Admin`) as the routes call it: api/ never
    reaches the store, so it is handed one at wiring."""

    async def create_account(self, name: str, credit_nano: int | None = None) -> dict[str, Any]: ...

    async def list_accounts(self) -> list[dict[str, Any]]: ...

    async def get_account(self, name: str) -> dict[str, Any]: ...

    async def credit(self, name: str, amount_nano: int, memo: str = "credit") -> dict[str, Any]: ...

    async def set_budgets(
        self, account: str, budgets: Mapping[str, int | None], key_id: str | None = None
    ) -> None: ...

    async def create_key(
        self,
        account: str,
        *,
        name: str = "",
        rpm: int | None = None,
        policy: KeyPolicy | None = None,
        budgets: Mapping[str, int | None] | None = None,
    ) -> dict[str, Any]: ...

    async def list_keys(self, account: str | None = None) -> list[dict[str, Any]]: ...

    async def get_key(self, key_id: str) -> dict[str, Any]: ...

    async def update_key(self, key_id: str, change: KeyChange) -> dict[str, Any]: ...

    async def revoke_key(self, key_id: str) -> dict[str, Any]: ...

    async def rotate_key(self, key_id: str) -> dict[str, Any]: ...

    async def usage(
        self, *, account: str | None = None, since_ms: int | None = None, limit: int
    ) -> list[dict[str, Any]]: ...


def require_admin(request: Request) -> AdminOps:
    """The admin service, once the request carries the admin token."""
    gw = gateway(request)
    if gw.settings.admin_token_sha256 is None or gw.admin is None:
        raise NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
    if not apikeys.bearer_matches(
        request.headers.get("authorization"), [gw.settings.admin_token_sha256]
    ):
        raise InvalidAdminToken(
            "The admin API takes the admin token only, as 'Authorization: Bearer <admin "
            "token>'; API keys are refused here."
        )
    return gw.admin


Handler = Callable[[Request, AdminOps], Awaitable[Response]]


def _admin(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The token first, then the handler; the admin's domain errors as API errors."""

    async def endpoint(request: Request) -> Response:
        admin = require_admin(request)
        try:
            return await handler(request, admin)
        except StoreNotFound as exc:
            raise NotFound(str(exc)) from exc
        except StoreConflict as exc:
            raise Conflict(str(exc)) from exc
        except (MoneyError, PolicyError) as exc:
            raise InvalidRequest(str(exc), code="invalid_value") from exc

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


# ---- accounts ----


async def create_account(request: Request, admin: AdminOps) -> Response:
    """{"name", "credit_usd"?} -> the account, 201."""
    body = await _body(request)
    name = _string(body, "name", required=True)
    assert name is not None
    credit = _usd(body, "credit_usd")
    return json_response(await admin.create_account(name, credit), status=201)


async def list_accounts(request: Request, admin: AdminOps) -> Response:
    return _list(await admin.list_accounts())


async def get_account(request: Request, admin: AdminOps) -> Response:
    """With its holds, what is available, and its own budgets."""
    return json_response(await admin.get_account(request.path_params["name"]))


async def credit_account(request: Request, admin: AdminOps) -> Response:
    """{"usd", "memo"?}: add credit; the account with its new balance."""
    body = await _body(request)
    amount = _usd(body, "usd")
    if amount is None:
        raise _invalid("usd", 'is required: a decimal USD string such as "25.50"')
    memo = _string(body, "memo") or "credit"
    return json_response(await admin.credit(request.path_params["name"], amount, memo))


async def set_account_budgets(request: Request, admin: AdminOps) -> Response:
    """{"budgets": {"day"|"month"|"lifetime": "USD" | null}}: set or drop them."""
    name = request.path_params["name"]
    budgets = _budgets(await _body(request), required=True)
    await admin.set_budgets(name, budgets or {})
    return json_response(await admin.get_account(name))


# ---- keys ----


async def create_key(request: Request, admin: AdminOps) -> Response:
    """{"account", "name"?, "rpm"?, "tpm"?, "models"?, "attestation"?, "budgets"?}: the
    key with its secret in `key`, shown in this answer only; 201."""
    body = await _body(request)
    account = _string(body, "account", required=True)
    assert account is not None
    policy = KeyPolicy(_models(body), _floor(body), _positive(body, "tpm"))
    key = await admin.create_key(
        account,
        name=_string(body, "name") or "",
        rpm=_positive(body, "rpm"),
        policy=policy,
        budgets=_budgets(body),
    )
    return json_response(key, status=201)


async def list_keys(request: Request, admin: AdminOps) -> Response:
    return _list(await admin.list_keys(request.query_params.get("account")))


async def get_key(request: Request, admin: AdminOps) -> Response:
    return json_response(await admin.get_key(request.path_params["key_id"]))


async def update_key(request: Request, admin: AdminOps) -> Response:
    """Each field given replaces that part of the key; null drops it (rpm: back to the
    gateway's default); a field left out stays as it is."""
    body = await _body(request)
    change = KeyChange(
        rpm=_positive(body, "rpm") if "rpm" in body else KEEP,
        models=_models(body) if "models" in body else KEEP,
        attestation=_floor(body) if "attestation" in body else KEEP,
        tpm=_positive(body, "tpm") if "tpm" in body else KEEP,
        budgets=_budgets(body),
    )
    return json_response(await admin.update_key(request.path_params["key_id"], change))


async def revoke_key(request: Request, admin: AdminOps) -> Response:
    """Refused from the next request on (within a second on every replica)."""
    return json_response(await admin.revoke_key(request.path_params["key_id"]))


async def rotate_key(request: Request, admin: AdminOps) -> Response:
    """A new key (its secret in `key`, shown once) with the old one's account, name,
    limits and policy; the old one is revoked. 201."""
    return json_response(await admin.rotate_key(request.path_params["key_id"]), status=201)


# ---- usage ----


async def list_usage(request: Request, admin: AdminOps) -> Response:
    """?account=&since=&limit=: one record per request, newest first."""
    params = request.query_params
    since = params.get("since")
    try:
        since_ms = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since", code="invalid_value") from exc
    limit_text = params.get("limit", str(MAX_USAGE_PAGE))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_USAGE_PAGE:
        raise _invalid("limit", f"must be an integer between 1 and {MAX_USAGE_PAGE}")
    records = await admin.usage(
        account=params.get("account"), since_ms=since_ms, limit=int(limit_text)
    )
    return _list(records)


def routes() -> list[BaseRoute]:
    return [
        Route(f"{PREFIX}/accounts", _admin(create_account), methods=["POST"]),
        Route(f"{PREFIX}/accounts", _admin(list_accounts), methods=["GET"]),
        Route(f"{PREFIX}/accounts/{{name}}", _admin(get_account), methods=["GET"]),
        Route(f"{PREFIX}/accounts/{{name}}/credit", _admin(credit_account), methods=["POST"]),
        Route(f"{PREFIX}/accounts/{{name}}/budgets", _admin(set_account_budgets), methods=["PUT"]),
        Route(f"{PREFIX}/keys", _admin(create_key), methods=["POST"]),
        Route(f"{PREFIX}/keys", _admin(list_keys), methods=["GET"]),
        Route(f"{PREFIX}/keys/{{key_id}}", _admin(get_key), methods=["GET"]),
        Route(f"{PREFIX}/keys/{{key_id}}", _admin(update_key), methods=["PATCH"]),
        Route(f"{PREFIX}/keys/{{key_id}}/revoke", _admin(revoke_key), methods=["POST"]),
        Route(f"{PREFIX}/keys/{{key_id}}/rotate", _admin(rotate_key), methods=["POST"]),
        Route(f"{PREFIX}/usage", _admin(list_usage), methods=["GET"]),
    ]


# ---- parsing ----


async def _body(request: Request) -> dict[str, Any]:
    timeout_s = gateway(request).settings.http.body_timeout_s
    return parse_json_object(await read_json_body(request, MAX_ADMIN_BODY_BYTES, timeout_s))


def _list(data: list[dict[str, Any]]) -> Response:
    return json_response({"object": "list", "data": data})


def _invalid(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' {why}.", param=param, code="invalid_value")


def _string(body: Mapping[str, Any], field: str, *, required: bool = False) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _invalid(field, "must be a non-empty string" if required else "must be a string")
    return value


def _usd(body: Mapping[str, Any], field: str) -> int | None:
    """A decimal string (or an integer) of USD as nano-USD; a JSON float is refused, as
    its value is not the decimal that was written."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _invalid(field, 'must be a decimal USD string such as "25.50", not a number')
    try:
        amount = usd_to_nano(value)
    except MoneyError as exc:
        raise _invalid(field, f"is not an exact USD amount ({exc})") from exc
    if amount <= 0:
        raise _invalid(field, "must be positive")
    return amount


def _positive(body: Mapping[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(field, "must be a positive integer or null")
    return value


def _models(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = body.get("models")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid("models", "must be a list of model ids or prefixes, or null")
    return apikeys.model_patterns(value)


def _floor(body: Mapping[str, Any]) -> AttestationFloor | None:
    value = body.get("attestation")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("attestation", "must be an object (tcb, require_gpu, upstreams, ...)")
    return AttestationFloor.from_json(value)


def _budgets(body: Mapping[str, Any], *, required: bool = False) -> dict[str, int | None] | None:
    value = body.get("budgets")
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise _invalid("budgets", 'must be an object of period to USD string, e.g. {"day": "5"}')
    return {
        str(period): None if amount is None else _usd({"budgets": amount}, "budgets")
        for period, amount in value.items()
    }
