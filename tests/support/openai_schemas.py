"""Check a JSON body is one OpenAI could have sent, as the official `openai` SDK types it.

`validate(instance, "CreateChatCompletionResponse")` checks `instance` (parsed JSON)
two ways and raises SchemaMismatch on the first disagreement:

- always, against the `openai` SDK's own model for that body, strictly: pydantic's
  strict mode (no coercion: a string where the SDK builds an int fails), and no field
  the SDK's model does not declare, at any depth, except the extensions teegate
  documents (EXTENSIONS). The SDK's models accept unknown fields silently, which is
  why extras are checked here by walking the validated tree.
- when $TEEGATE_OPENAI_SPEC names OpenAI's OpenAPI document, against its
  components/schemas/NAME too; that catches a required-but-nullable field left out,
  which the SDK (defaulting it to None) cannot see. Without the variable that half is
  skipped, so the suite needs no file outside the repository.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import yaml
from jsonschema import Draft202012Validator
from openai.pagination import SyncPage
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.shared import ErrorObject
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

__all__ = [
    "EXTENSIONS",
    "SchemaMismatch",
    "SchemaName",
    "openapi_spec",
    "validate",
    "validate_openapi",
    "validate_sdk",
]

SchemaName = Literal[
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateEmbeddingResponse",
    "ErrorResponse",
    "ListModelsResponse",
    "Model",
]


class SchemaMismatch(AssertionError):
    """The body is not one OpenAI's SDK or OpenAPI document allows."""


class ErrorResponse(BaseModel):
    """The envelope the SDK unwraps (`body["error"]`) into APIStatusError's fields."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorObject


_SDK_TYPES: dict[SchemaName, Any] = {
    "CreateChatCompletionResponse": ChatCompletion,
    "CreateChatCompletionStreamResponse": ChatCompletionChunk,
    "CreateEmbeddingResponse": CreateEmbeddingResponse,
    "ErrorResponse": ErrorResponse,
    "ListModelsResponse": SyncPage[Model],
    "Model": Model,
}

EXTENSIONS: dict[type[BaseModel], frozenset[str]] = {
    # Reasoning models' thinking, named as DeepSeek's API and the upstreams name it.
    ChatCompletionMessage: frozenset({"reasoning_content"}),
    ChoiceDelta: frozenset({"reasoning_content"}),
    # The HTTP status repeated in the body, for clients that only keep the body.
    ErrorObject: frozenset({"status"}),
    # The confidential-compute listing (docs/api): proof, price and limits per model.
    Model: frozenset(
        {
            "attestation",
            "capabilities",
            "confidential_compute",
            "context_length",
            "description",
            "max_output_length",
            "modality",
            "pricing",
        }
    ),
}
"""Fields teegate adds to OpenAI's bodies, by the SDK model that carries them."""

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def validate(instance: Any, schema_name: SchemaName) -> None:
    """Raise SchemaMismatch unless `instance` passes validate_sdk and validate_openapi."""
    validate_sdk(instance, schema_name)
    validate_openapi(instance, schema_name)


def validate_sdk(instance: Any, schema_name: SchemaName) -> None:
    """Strictly as the `openai` SDK's type for `schema_name` would build it."""
    try:
        built = _adapter(schema_name).validate_python(instance, strict=True)
    except ValidationError as exc:
        raise SchemaMismatch(f"not an SDK {schema_name}: {exc}") from exc
    for path, model in _models(built, schema_name):
        unexpected = set(model.model_extra or ()) - EXTENSIONS.get(type(model), frozenset())
        if unexpected:
            raise SchemaMismatch(
                f"{path}: {sorted(unexpected)} not in the SDK's {type(model).__name__}"
            )


def validate_openapi(instance: Any, schema_name: SchemaName) -> None:
    """Against OpenAI's OpenAPI document if $TEEGATE_OPENAI_SPEC names one, else nothing."""
    spec = openapi_spec()
    if spec is None:
        return
    try:
        _openapi_validator(spec, schema_name).validate(instance)
    except jsonschema.ValidationError as exc:
        raise SchemaMismatch(f"not an OpenAPI {schema_name}: {exc.message}") from exc


def openapi_spec() -> Path | None:
    named = os.environ.get("TEEGATE_OPENAI_SPEC")
    if not named:
        return None
    path = Path(named)
    if not path.is_file():
        raise FileNotFoundError(f"TEEGATE_OPENAI_SPEC names {path}, which is not a file")
    return path


@functools.cache
def _adapter(schema_name: SchemaName) -> TypeAdapter[Any]:
    return TypeAdapter(_SDK_TYPES[schema_name])


def _models(node: object, path: str) -> Iterator[tuple[str, BaseModel]]:
    """Every pydantic model in the validated tree, with where it sits."""
    if isinstance(node, BaseModel):
        yield path, node
        for name in type(node).model_fields:
            yield from _models(getattr(node, name), f"{path}.{name}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _models(item, f"{path}[{index}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _models(value, f"{path}.{key}")


@functools.cache
def _openapi_validator(spec: Path, schema_name: SchemaName) -> Draft202012Validator:
    schemas = _openapi_schemas(spec)
    if schema_name not in schemas:
        raise KeyError(f"no schema {schema_name!r} in {spec}")
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": {"schemas": schemas}}
    return Draft202012Validator(root)


@functools.cache
def _openapi_schemas(spec: Path) -> dict[str, Any]:
    """components/schemas, loaded once per process (the document is 3 MB of YAML)."""
    with spec.open("rb") as handle:
        document = yaml.load(handle, Loader=_Loader)
    converted: dict[str, Any] = _nullable_to_anyof(document["components"]["schemas"])
    return converted


def _nullable_to_anyof(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema 2020-12 says it, recursively.

    The document mixes 3.0-style `nullable` into 3.1-style schemas; a 2020-12
    validator ignores the keyword and would reject every null it allows.
    """
    if isinstance(node, list):
        return [_nullable_to_anyof(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_anyof(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted
