"""errors.py: every API error's status, type and code, and the one envelope shape."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import jsonschema
import orjson
import pytest

import teegate
from teegate import errors
from teegate.api.openapi import build_openapi
from teegate.errors import (
    AttestationFailed,
    BudgetExceeded,
    CatalogEntryError,
    ClientClosedRequest,
    ConfigError,
    Conflict,
    DomainError,
    E2eeRequired,
    EnclaveNotVerified,
    HeadersTooLarge,
    IdempotencyConflict,
    IdempotencyKeyReused,
    InsufficientBalance,
    InternalError,
    InvalidAdminToken,
    InvalidApiKey,
    InvalidRequest,
    InvariantViolation,
    MethodNotAllowed,
    ModelNotAllowed,
    ModelNotConfidential,
    ModelNotFound,
    MoneyError,
    NotAvailable,
    NotFound,
    PolicyError,
    RateLimitExceeded,
    RequestTimeout,
    RequestTooLarge,
    ServiceUnavailable,
    SSEError,
    StoreConflict,
    StoreNotFound,
    TargetTooLong,
    TeegateError,
    TeegateException,
    UnsupportedCapability,
    UpstreamError,
    UpstreamKeyChanged,
    UpstreamRejected,
    UpstreamTimeout,
    WebhookRejected,
    error_envelope,
)
from tests.support.openai_schemas import validate

# class, how to build one, status, type, code
ERRORS: list[tuple[type[TeegateError], TeegateError, int, str, str]] = [
    (TeegateError, TeegateError("boom"), 500, "api_error", "internal_error"),
    (
        InvalidRequest,
        InvalidRequest("bad", param="x"),
        400,
        "invalid_request_error",
        "invalid_request_error",
    ),
    (
        RequestTooLarge,
        RequestTooLarge("too big"),
        413,
        "invalid_request_error",
        "request_too_large",
    ),
    (RequestTimeout, RequestTimeout("slow"), 408, "invalid_request_error", "request_timeout"),
    (TargetTooLong, TargetTooLong("long"), 414, "invalid_request_error", "uri_too_long"),
    (
        HeadersTooLarge,
        HeadersTooLarge("big"),
        431,
        "invalid_request_error",
        "request_header_fields_too_large",
    ),
    (
        UnsupportedCapability,
        UnsupportedCapability("no tools", param="tools"),
        400,
        "invalid_request_error",
        "unsupported_capability",
    ),
    (
        ModelNotConfidential,
        ModelNotConfidential("not TEE"),
        400,
        "invalid_request_error",
        "model_not_confidential",
    ),
    (
        UpstreamRejected,
        UpstreamRejected("the upstream refused it", param="tool_choice"),
        400,
        "invalid_request_error",
        "upstream_rejected",
    ),
    (E2eeRequired, E2eeRequired(), 400, "invalid_request_error", "e2ee_required"),
    (
        WebhookRejected,
        WebhookRejected("unsigned"),
        400,
        "invalid_request_error",
        "webhook_rejected",
    ),
    (InvalidApiKey, InvalidApiKey("nope"), 401, "authentication_error", "invalid_api_key"),
    (
        IdempotencyConflict,
        IdempotencyConflict("running", finished=False),
        409,
        "invalid_request_error",
        "idempotency_key_in_use",
    ),
    (
        IdempotencyKeyReused,
        IdempotencyKeyReused("other body"),
        422,
        "invalid_request_error",
        "idempotency_key_reused",
    ),
    (
        InvalidAdminToken,
        InvalidAdminToken("nope"),
        401,
        "authentication_error",
        "invalid_admin_token",
    ),
    (
        InsufficientBalance,
        InsufficientBalance("poor"),
        402,
        "insufficient_quota",
        "insufficient_balance",
    ),
    (
        ModelNotAllowed,
        ModelNotAllowed("m"),
        403,
        "invalid_request_error",
        "model_not_allowed",
    ),
    (
        BudgetExceeded,
        BudgetExceeded("over"),
        402,
        "insufficient_quota",
        "budget_exceeded",
    ),
    (NotFound, NotFound("gone"), 404, "invalid_request_error", "not_found"),
    (ModelNotFound, ModelNotFound("m"), 404, "invalid_request_error", "model_not_found"),
    (
        MethodNotAllowed,
        MethodNotAllowed("no"),
        405,
        "invalid_request_error",
        "method_not_allowed",
    ),
    (Conflict, Conflict("taken"), 409, "invalid_request_error", "conflict"),
    (
        RateLimitExceeded,
        RateLimitExceeded("slow down", retry_after_s=7),
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
    ),
    (
        ClientClosedRequest,
        ClientClosedRequest("left"),
        499,
        "api_error",
        "client_closed_request",
    ),
    (InternalError, InternalError("oops"), 500, "api_error", "internal_error"),
    (UpstreamError, UpstreamError("bad gateway"), 502, "api_error", "upstream_error"),
    (UpstreamKeyChanged, UpstreamKeyChanged("key changed"), 502, "api_error", "upstream_error"),
    (NotAvailable, NotAvailable("no audio"), 503, "invalid_request_error", "not_available"),
    (
        ServiceUnavailable,
        ServiceUnavailable("db down"),
        503,
        "api_error",
        "service_unavailable",
    ),
    (UpstreamTimeout, UpstreamTimeout("slow"), 504, "api_error", "upstream_timeout"),
]


def test_the_table_covers_every_api_error_class() -> None:
    defined = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, TeegateError) and obj.__module__ == errors.__name__
    }
    assert defined == {cls for cls, *_ in ERRORS}


@pytest.mark.parametrize(
    ("cls", "error", "status", "type_", "code"), ERRORS, ids=[row[0].__name__ for row in ERRORS]
)
def test_status_type_and_code(
    cls: type[TeegateError], error: TeegateError, status: int, type_: str, code: str
) -> None:
    assert type(error) is cls
    assert (error.status, error.type, error.error_code) == (status, type_, code)
    envelope = error.envelope()
    assert list(envelope) == ["error"]
    assert envelope["error"] == {
        "message": error.message,
        "type": type_,
        "code": code,
        "param": error.param,
        "status": status,
    }
    assert orjson.loads(error.body()) == envelope
    assert str(error) == error.message


WITH_HEADERS = (RateLimitExceeded, NotAvailable, RequestTimeout)


@pytest.mark.parametrize(
    ("cls", "error"),
    [(row[0], row[1]) for row in ERRORS if row[0] not in WITH_HEADERS],
    ids=[row[0].__name__ for row in ERRORS if row[0] not in WITH_HEADERS],
)
def test_only_rate_limit_and_not_available_add_headers(
    cls: type[TeegateError], error: TeegateError
) -> None:
    assert error.headers() == {}


def test_request_timeout_closes_the_connection() -> None:
    assert RequestTimeout("slow").headers() == {"connection": "close"}


def test_not_available_tells_sdks_not_to_retry() -> None:
    assert NotAvailable("no audio").headers() == {"x-should-retry": "false"}


def test_rate_limit_exceeded_carries_retry_after() -> None:
    error = RateLimitExceeded("Rate limit reached: 10 requests per minute.", retry_after_s=42)
    assert error.retry_after_s == 42
    assert error.headers() == {"Retry-After": "42"}
    assert error.envelope()["error"]["param"] is None


def test_invalid_request_specific_code_and_param() -> None:
    error = InvalidRequest("Invalid value for 'n'.", param="n", code="invalid_value")
    assert error.envelope()["error"] == {
        "message": "Invalid value for 'n'.",
        "type": "invalid_request_error",
        "code": "invalid_value",
        "param": "n",
        "status": 400,
    }
    # The class-level code is untouched by one instance's specific code.
    assert InvalidRequest.code == "invalid_request_error"
    assert InvalidRequest("plain").error_code == "invalid_request_error"


def test_unsupported_capability_keeps_its_code_and_param() -> None:
    error = UnsupportedCapability("no json_schema", param="response_format")
    assert error.envelope()["error"]["code"] == "unsupported_capability"
    assert error.envelope()["error"]["param"] == "response_format"


def test_model_errors_point_at_the_model_param() -> None:
    not_found = ModelNotFound("acme/NoSuchModel")
    assert not_found.param == "model"
    assert "acme/NoSuchModel" in not_found.message
    not_confidential = ModelNotConfidential("Use 'x-TEE' instead.")
    assert not_confidential.param == "model"
    assert not_confidential.message == "Use 'x-TEE' instead."
    not_allowed = ModelNotAllowed("acme/Other")
    assert not_allowed.param == "model"
    assert "acme/Other" in not_allowed.message


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (RequestTooLarge, InvalidRequest),
        (UnsupportedCapability, InvalidRequest),
        (ModelNotConfidential, InvalidRequest),
        (UpstreamRejected, InvalidRequest),
        (E2eeRequired, InvalidRequest),
        (ModelNotFound, NotFound),
        (InvalidRequest, TeegateError),
        (UpstreamTimeout, TeegateError),
    ],
)
def test_hierarchy(child: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(child, parent)


def test_domain_errors_are_not_api_errors() -> None:
    assert not issubclass(DomainError, TeegateError)
    assert not issubclass(AttestationFailed, TeegateError)
    assert not issubclass(ConfigError, TeegateError)
    failed = AttestationFailed("tcb_status", "OutOfDate is not allowed")
    assert (failed.check, failed.reason) == ("tcb_status", "OutOfDate is not allowed")
    assert str(failed) == "tcb_status: OutOfDate is not allowed"


# --- the whole tree -----------------------------------------------------------------

DOMAIN_ERRORS: dict[type[DomainError], type[Exception] | None] = {
    AttestationFailed: None,
    CatalogEntryError: ValueError,
    ConfigError: None,
    EnclaveNotVerified: RuntimeError,
    InvariantViolation: RuntimeError,
    MoneyError: ValueError,
    PolicyError: ValueError,
    SSEError: ValueError,
    StoreConflict: ValueError,
    StoreNotFound: LookupError,
}
"""Each DomainError and the builtin its callers may still catch it by."""

OUTSIDE_THE_TREE = "teegate.devstack"
"""The devstack plays a third-party upstream: its errors are that upstream's, not
teegate's (it builds their envelope with error_envelope all the same)."""


def defined_exceptions(module_name: str) -> set[type[BaseException]]:
    module = importlib.import_module(module_name)
    return {
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == module_name
    }


def teegate_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(teegate.__path__, "teegate.")
        if not info.name.startswith((OUTSIDE_THE_TREE, "teegate.store.migrations"))
    ]


def test_every_teegate_exception_is_defined_in_errors_py() -> None:
    outside = {
        f"{cls.__module__}.{cls.__qualname__}"
        for name in teegate_modules()
        if name != errors.__name__
        for cls in defined_exceptions(name)
    }
    assert not outside, f"define these in errors.py's tree: {sorted(outside)}"


def drawn_tree(doc: str) -> dict[str, str | None]:
    """Each class name drawn in the docstring's tree, and the name it hangs under."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        words = line.split()
        if not words or not (words[0] == "TeegateException" or "── " in line):
            continue
        name = words[0] if words[0] == "TeegateException" else line.split("── ")[1].split()[0]
        column = line.index(name)
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((column, name))
    return parents


def test_errors_py_is_one_tree_drawn_in_its_docstring() -> None:
    defined = defined_exceptions(errors.__name__)
    actual = {
        cls.__name__: next((base.__name__ for base in cls.__bases__ if base in defined), None)
        for cls in defined
    }
    assert all(issubclass(cls, TeegateException) for cls in defined)
    assert errors.__doc__
    assert drawn_tree(errors.__doc__) == actual
    assert [name for name, parent in actual.items() if parent is None] == ["TeegateException"]


@pytest.mark.parametrize(
    ("cls", "builtin"), DOMAIN_ERRORS.items(), ids=[cls.__name__ for cls in DOMAIN_ERRORS]
)
def test_domain_errors_keep_the_builtin_callers_catch(
    cls: type[DomainError], builtin: type[Exception] | None
) -> None:
    assert issubclass(cls, DomainError)
    assert builtin is None or issubclass(cls, builtin)


def test_the_domain_branch_is_complete() -> None:
    defined = defined_exceptions(errors.__name__)
    assert {cls for cls in defined if issubclass(cls, DomainError)} - {DomainError} == set(
        DOMAIN_ERRORS
    )


def _as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema's null type."""
    if not isinstance(node, dict):
        return node
    converted = {key: _as_json_schema(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") else converted


def _errors_schema() -> dict[str, Any]:
    schema: dict[str, Any] = _as_json_schema(build_openapi()["components"]["schemas"]["Error"])
    return schema


@pytest.mark.parametrize(
    "error", [row[1] for row in ERRORS], ids=[row[0].__name__ for row in ERRORS]
)
def test_every_envelope_matches_the_openapi_error_response(error: TeegateError) -> None:
    envelope = error.envelope()
    assert list(envelope["error"]) == ["message", "type", "code", "param", "status"]
    validate(envelope, "ErrorResponse")  # OpenAI's own schema
    jsonschema.Draft7Validator(_errors_schema()).validate(envelope)  # the gateway's /openapi.json


def test_one_builder_for_both_envelopes() -> None:
    error = InvalidRequest("Invalid value for 'n'.", param="n", code="invalid_value")
    assert error.envelope() == error_envelope(
        "Invalid value for 'n'.",
        type_="invalid_request_error",
        code="invalid_value",
        param="n",
        status=400,
    )
    upstream_style = error_envelope(
        "Not here.", type_="invalid_request_error", code=None, param=None
    )
    assert upstream_style == {
        "error": {
            "message": "Not here.",
            "type": "invalid_request_error",
            "code": None,
            "param": None,
        }
    }
    validate(upstream_style, "ErrorResponse")


def test_the_openapi_publishes_the_idempotency_key_and_its_answers() -> None:
    paths = build_openapi()["paths"]
    for path in ("/v1/chat/completions", "/v1/embeddings"):
        post = paths[path]["post"]
        assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
        assert {"409", "422"} <= post["responses"].keys()
