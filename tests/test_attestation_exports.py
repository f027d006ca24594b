"""The public surface of teegate.attestation (and its HTTP edge, teegate.attestation.http):
exactly what __all__ lists, nothing private."""

from __future__ import annotations

import ast
from pathlib import Path

import teegate.attestation as attestation
import teegate.attestation.http as attestation_http

SOURCE = Path(attestation.__file__).parent


def test_all_names_exist_and_are_unique() -> None:
    assert len(set(attestation.__all__)) == len(attestation.__all__)
    for name in attestation.__all__:
        assert hasattr(attestation, name), name
        assert not name.startswith("_")


def test_public_classes_and_functions_are_all_exported() -> None:
    exported = set(attestation.__all__) | set(attestation_http.__all__)
    for module in SOURCE.glob("_*.py"):
        if module.name == "__init__.py":
            continue
        tree = ast.parse(module.read_text())
        for node in tree.body:
            definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            if isinstance(node, definition) and node.name in _module_all(tree):
                assert node.name in exported, f"{module.name}: {node.name}"


def test_domain_package_imports_no_web_framework_or_sql() -> None:
    for module in SOURCE.glob("*.py"):
        text = module.read_text()
        for forbidden in ("starlette", "fastapi", "sqlalchemy"):
            assert f"import {forbidden}" not in text and f"from {forbidden}" not in text, (
                module.name
            )
        if module.name != "_http.py":
            assert "import aiohttp" not in text, f"{module.name}: aiohttp belongs in _http.py"


def _module_all(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            assert isinstance(node.value, ast.List | ast.Tuple), "__all__ is a literal list"
            return {ast.literal_eval(e) for e in node.value.elts}
    return set()
