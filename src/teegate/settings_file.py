"""Settings written back as TOML: what `teegate dev` leaves for the commands run beside it.

The standard library reads TOML but does not write it. Settings are tables,
arrays of tables and scalars, which is all `dumps` writes; secrets are never
written, only the files that hold them (`key_hash_secret_file`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from teegate.config import SECRETS_BY_FILE, Settings

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def settings_toml(settings: Settings) -> str:
    """The settings that were given (not the defaults), the database resolved."""
    exclude: dict[str, Any] = dict.fromkeys(SECRETS_BY_FILE, True)
    exclude["stripe"] = {"secret_key", "webhook_secret"}  # the gateway's own; no command needs them
    values = settings.model_dump(mode="json", exclude_unset=True, exclude=exclude)
    values["database_url"] = settings.resolved_database_url
    return dumps(values)


def dumps(values: Mapping[str, Any]) -> str:
    """TOML for JSON-like values; None leaves a key out (TOML has no null)."""
    lines: list[str] = []
    _table(lines, (), values)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    arrays = {k: v for k, v in table.items() if _is_table_array(v)}
    for key, value in table.items():
        if value is not None and key not in tables and key not in arrays:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, sub in tables.items():
        lines.extend(("", f"[{_dotted((*path, key))}]"))
        _table(lines, (*path, key), sub)
    for key, items in arrays.items():
        for item in items:
            lines.extend(("", f"[[{_dotted((*path, key))}]]"))
            _table(lines, (*path, key), item)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and isinstance(value[0], Mapping)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(_key(part) for part in path)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _string(text: str) -> str:
    # JSON's escapes are TOML's; DEL is the one control character JSON leaves raw.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
