"""Generate a JSON value valid against a JSON Schema, deterministically.

Tool-call arguments and structured outputs must parse and validate on the
client, so the simulated model builds them from the schema instead of
sampling text. Covers what function and structured-output schemas use:
object/properties/required, string (+ length, common formats), number and
integer (+ bounds; multipleOf for integers), boolean, null, array (+ item counts), enum,
const, anyOf/oneOf (first branch), allOf (merged) and local `$ref`s.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from teegate.devstack._rng import DeterministicRng
from teegate.devstack._words import VOCABULARY

MAX_DEPTH = 8
"""Past this nesting only required properties are filled, so recursive schemas end."""

DEFAULT_SPAN = 100
FORMAT_EXAMPLES = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
}

JSON_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["answer", "confidence", "tags"],
}
"""What `response_format: json_object` answers with: the request names no schema."""

Schema = dict[str, Any]


def generate_json(schema: Schema, rng: DeterministicRng) -> Any:
    """A value valid against `schema` (whose local `$ref`s resolve against itself)."""
    return _Generator(schema, rng).value(schema, 0)


class _Generator:
    def __init__(self, root: Schema, rng: DeterministicRng) -> None:
        self._root = root
        self._rng = rng
        self._by_type: dict[str, Callable[[Schema, int], Any]] = {
            "object": self._object,
            "array": self._array,
            "string": lambda schema, _depth: self._string(schema),
            "integer": lambda schema, _depth: self._integer(schema),
            "number": lambda schema, _depth: self._number(schema),
            "boolean": lambda _schema, _depth: self._rng.below(2) == 1,
            "null": lambda _schema, _depth: None,
        }

    def value(self, schema: Any, depth: int) -> Any:
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self.value(_preferred_branch(schema[key]), depth + 1)
        if isinstance(schema.get("allOf"), list):
            return self.value(_merge_all_of(schema), depth + 1)
        return self._by_type[_type_of(schema)](schema, depth)

    def _resolve(self, schema: Any, depth: int) -> Schema:
        """Follow local `$ref`s; anything unresolvable counts as an empty schema."""
        for _ in range(MAX_DEPTH):
            if not isinstance(schema, dict):
                return {}
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                return schema
            schema = _pointer(self._root, ref) if depth < 2 * MAX_DEPTH else {}
        return {}

    def _object(self, schema: Schema, depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [name for name in schema.get("required", []) if isinstance(name, str)]
        names = list(properties) if depth < MAX_DEPTH else []
        names += [name for name in required if name not in names]
        return {name: self.value(properties.get(name, {}), depth + 1) for name in names}

    def _array(self, schema: Schema, depth: int) -> list[Any]:
        low = _int_or(schema.get("minItems"), 0)
        high = _int_or(schema.get("maxItems"), max(low, 2))
        count = min(max(1 + self._rng.below(2), low), high)
        items = schema.get("items", {})
        values = [self.value(items, depth + 1) for _ in range(count)]
        return _unique(values) if schema.get("uniqueItems") is True else values

    def _string(self, schema: Schema) -> str:
        example = FORMAT_EXAMPLES.get(schema.get("format", ""))
        text = example or " ".join(
            self._rng.choice(VOCABULARY) for _ in range(1 + self._rng.below(3))
        )
        while len(text) < _int_or(schema.get("minLength"), 0):
            text += " " + self._rng.choice(VOCABULARY)
        max_length = schema.get("maxLength")
        return text[:max_length] if isinstance(max_length, int) else text

    def _integer(self, schema: Schema) -> int:
        low, high = _bounds(schema, nudge=1.0)
        step = schema.get("multipleOf")
        step = step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 1
        first, last = math.ceil(low / step), math.floor(high / step)
        if last < first:
            return first * step
        return (first + self._rng.below(last - first + 1)) * step

    def _number(self, schema: Schema) -> float:
        low, high = _bounds(schema, nudge=0.0)
        raw = low + self._rng.unit() * (high - low)
        for value in (round(raw, 2), raw, (low + high) / 2):
            if _within(schema, value):
                return value
        return low


def _type_of(schema: Schema) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str) and kind in (
        "object",
        "array",
        "string",
        "integer",
        "number",
        "boolean",
        "null",
    ):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    return "array" if "items" in schema else "string"


def _preferred_branch(branches: list[Any]) -> Any:
    """The first branch that is not plain null, so optional fields still carry a value."""
    return next(
        (b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")), branches[0]
    )


def _merge_all_of(schema: Schema) -> Schema:
    merged: Schema = {key: value for key, value in schema.items() if key != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        merged["properties"] = {**merged.get("properties", {}), **part.get("properties", {})}
        merged["required"] = [*merged.get("required", []), *part.get("required", [])]
        merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
    return merged


def _bounds(schema: Schema, *, nudge: float) -> tuple[float, float]:
    """[low, high] from the schema; exclusive bounds move inwards by `nudge`.

    Integers nudge by one; numbers by nothing, and `_within` then rejects an
    exact hit on an exclusive edge.
    """
    low = _number_or(schema.get("minimum"))
    high = _number_or(schema.get("maximum"))
    exclusive_low = _number_or(schema.get("exclusiveMinimum"))
    exclusive_high = _number_or(schema.get("exclusiveMaximum"))
    if exclusive_low is not None:
        low = max(exclusive_low + nudge, low if low is not None else -math.inf)
    if exclusive_high is not None:
        high = min(exclusive_high - nudge, high if high is not None else math.inf)
    if low is None:
        low = 0.0 if high is None or high >= 0 else high - DEFAULT_SPAN
    if high is None:
        high = low + DEFAULT_SPAN
    return low, max(low, high)


def _within(schema: Schema, value: float) -> bool:
    checks = (
        ("minimum", operator.ge),
        ("maximum", operator.le),
        ("exclusiveMinimum", operator.gt),
        ("exclusiveMaximum", operator.lt),
    )
    for key, holds in checks:
        bound = _number_or(schema.get(key))
        if bound is not None and not holds(value, bound):
            return False
    return True


def _pointer(root: Schema, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for token in filter(None, ref[1:].split("/")):
        key = token.replace("~1", "/").replace("~0", "~")
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node


def _unique(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _int_or(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _number_or(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
