"""Validate JSON against OpenAI's own schemas from the pinned openai-openapi.yaml.

`validate(instance, "CreateChatCompletionResponse")` raises
jsonschema.ValidationError when `instance` is not what OpenAI's schema allows.
The spec mixes OpenAPI 3.0 `nullable: true` into 3.1-style schemas; every
`nullable` schema is rewritten as `anyOf: [schema, {"type": "null"}]` so the
JSON Schema 2020-12 validator honours it. Loaded once per process (3 MB YAML).

The spec is found at $TEEGATE_OPENAI_SPEC, else spec/openai-openapi.yaml in the
repository, else shared/spec/ beside the repository (as CI lays it out).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

_REPO = Path(__file__).resolve().parent.parent
_CANDIDATES = (
    _REPO / "spec" / "openai-openapi.yaml",
    _REPO.parent / "shared" / "spec" / "openai-openapi.yaml",
    Path("/work/shared/spec/openai-openapi.yaml"),
)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def validate(instance: Any, schema_name: str) -> None:
    """Raise jsonschema.ValidationError unless `instance` matches components/schemas/NAME."""
    validator(schema_name).validate(instance)


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    schemas = _schemas()
    if schema_name not in schemas:
        raise KeyError(f"no schema {schema_name!r} in the OpenAI spec")
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": {"schemas": schemas}}
    return Draft202012Validator(root)


def spec_path() -> Path:
    override = os.environ.get("TEEGATE_OPENAI_SPEC")
    candidates = (Path(override),) if override else _CANDIDATES
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"openai-openapi.yaml not found; tried {[str(p) for p in candidates]}")


@functools.cache
def _schemas() -> dict[str, Any]:
    with spec_path().open("rb") as handle:
        spec = yaml.load(handle, Loader=_Loader)
    converted: dict[str, Any] = _nullable_to_anyof(spec["components"]["schemas"])
    return converted


def _nullable_to_anyof(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 `nullable: true` as JSON Schema, recursively."""
    if isinstance(node, list):
        return [_nullable_to_anyof(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_anyof(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted
