"""The layers, checked: what each part of teegate may import.

- A domain package, imported alone in a fresh interpreter, loads no web framework,
  no SQL or storage driver and no telemetry library (OpenTelemetry, Prometheus), not
  even indirectly (`sys.modules` is what counts).
- Nothing under `teegate.api` or `teegate.dashboard` reaches `teegate.store`, directly
  or through another module (a static walk of the imports).
- No package imports another package's private (`_name`) module or name.
- No test imports a teegate private module or name, or another test module: tests go
  through the public surfaces, and what several tests share lives in tests/support.
- config.py is the one module that reads the environment.
- Every public surface (a package, or a module that only re-exports) lists exactly its
  public names in `__all__`, sorted as ruff sorts it (as httpx's
  tests/test_exported_members.py keeps httpx's list honest).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import types
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

import teegate

SRC = Path(teegate.__file__).parent.parent
PACKAGE = SRC / "teegate"

DOMAIN_MODULES = [
    "teegate.apikeys",  # the key/principal model; auth.py is its store-backed edge
    "teegate.attestation",  # minus its HTTP edge, teegate.attestation.http
    "teegate.billing",
    "teegate.catalog",
    "teegate.chat",
    "teegate.embeddings",
    "teegate.ratelimit",  # minus its Redis edge, teegate.ratelimit.redis
    "teegate.receipts",
]
WEB_FRAMEWORKS = ("aiohttp", "fastapi", "httptools", "starlette", "uvicorn")
STORAGE_DRIVERS = ("aiosqlite", "asyncpg", "redis", "sqlalchemy", "sqlite3")
TELEMETRY = ("opentelemetry", "prometheus_client")
"""The operator's instruments: the edges (tracing.py, metrics.py) hold them, and the
domain names its one traced step through `chat.Trace`."""

# Run in a fresh interpreter: records which module first asked for each module, so a
# leak can be told as the chain of imports that brought it in.
_TRACE_IMPORTS = """
import importlib, json, sys

first_importer = {}

class ImportTracer:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in first_importer:
            frame = sys._getframe(1)
            while frame is not None and (
                frame.f_code.co_filename.startswith("<frozen")
                or frame.f_globals.get("__name__", "").startswith("importlib")
            ):
                frame = frame.f_back
            first_importer[name] = frame.f_globals.get("__name__") if frame else None
        return None

sys.path.insert(0, sys.argv[2])
sys.meta_path.insert(0, ImportTracer)
importlib.import_module(sys.argv[1])
forbidden = set(sys.argv[3].split(","))
leaks = {}
for top in sorted({m.partition(".")[0] for m in sys.modules} & forbidden):
    chain = [top]
    while (importer := first_importer.get(chain[-1])) not in (None, "__main__"):
        if importer in chain:
            break
        chain.append(importer)
    leaks[top] = chain[::-1]
print(json.dumps(leaks))
"""


def leaks_on_import(module: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Each forbidden package that `import module` loads, with the chain of imports
    from `module` to it."""
    result = subprocess.run(
        [sys.executable, "-c", _TRACE_IMPORTS, module, str(SRC), ",".join(forbidden)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    leaks: dict[str, list[str]] = json.loads(result.stdout)
    return leaks


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_a_domain_package_loads_no_web_framework_or_storage_driver(module: str) -> None:
    leaks = leaks_on_import(module, WEB_FRAMEWORKS + STORAGE_DRIVERS + TELEMETRY)
    assert not leaks, f"`import {module}` loads " + "; ".join(
        f"{name} (through {' -> '.join(chain)})" for name, chain in leaks.items()
    )


def test_the_import_check_sees_indirect_imports() -> None:
    """auth.py is the store's edge: SQLAlchemy arrives only through teegate.store."""
    leaks = leaks_on_import("teegate.auth", STORAGE_DRIVERS)
    chain = leaks["sqlalchemy"]
    assert chain[0] == "teegate.auth"
    assert "teegate.store" in chain
    assert chain[-1] == "sqlalchemy"


# ---- the static import graph of src/teegate ----


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def imported_names(module: str, tree: ast.Module, path: Path) -> Iterator[tuple[str, int]]:
    """Every dotted name an import in `tree` (of `module`, at `path`) names (the module,
    and module.name for each name taken from it), with its line; relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:
                if alias.name != "*":
                    yield f"{base}.{alias.name}", node.lineno


def with_parents(name: str) -> Iterator[str]:
    """A module and the packages that importing it runs first."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {
            m
            for name, _ in imported_names(module, tree, path)
            for m in with_parents(name)
            if m in MODULES and m != module
        }
    return graph


@pytest.mark.parametrize(
    ("package", "walked"),
    [("teegate.api", "teegate.api._state"), ("teegate.dashboard", "teegate.dashboard._services")],
)
def test_the_web_edges_never_reach_the_store(package: str, walked: str) -> None:
    """api/ and the dashboard's pages reach accounts and money through services that
    app.py wires (the dashboard's: `teegate.console`, `teegate.payments`, `teegate.receipts`)."""
    graph = import_graph()
    edge = sorted(m for m in MODULES if m == package or m.startswith(package + "."))
    came_from: dict[str, str | None] = dict.fromkeys(edge)
    queue = deque(edge)
    while queue:
        module = queue.popleft()
        if module == "teegate.store" or module.startswith("teegate.store."):
            chain = [module]
            while (previous := came_from[chain[-1]]) is not None:
                chain.append(previous)
            pytest.fail(f"{package} reaches the store: {' -> '.join(reversed(chain))}")
        for imported in sorted(graph[module] - came_from.keys()):
            came_from[imported] = module
            queue.append(imported)
    assert walked in came_from  # the walk did walk


def private_owner(name: str) -> str | None:
    """The package whose private module or name `name` reaches into, if any."""
    parts = name.split(".")
    if parts[0] != "teegate":
        return None
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return ".".join(parts[:index])
    return None


def test_no_package_imports_another_packages_private_module() -> None:
    offences: dict[str, str] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for name, line in imported_names(module, tree, path):
            owner = private_owner(name)
            if owner is None or owner == "teegate":
                continue  # teegate itself has no private modules to guard
            if module != owner and not module.startswith(owner + "."):
                offences.setdefault(f"{path.relative_to(SRC)}:{line}", name)
    assert not offences, "import the public name instead:\n" + "\n".join(
        f"{where} imports {name}" for where, name in offences.items()
    )


# ---- the tests' own imports ----

TESTS = Path(__file__).parent


def suite_files() -> dict[str, Path]:
    """Every Python module of the suite (the TypeScript client's packages aside)."""
    files = {}
    for path in sorted(TESTS.rglob("*.py")):
        relative = path.relative_to(TESTS.parent)
        if "node_modules" in relative.parts:
            continue
        parts = relative.with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def import_offence_in_tests(name: str) -> str | None:
    """Why a test may not import `name`: a teegate private module or name (a test goes
    through the public surface, as any caller does), or another test module (shared
    helpers live in tests/support)."""
    if private_owner(name) is not None:
        return "a private teegate module or name"
    parts = name.split(".")
    if parts[0] == "tests" and len(parts) > 1 and parts[1] != "support":
        return "another test module"
    return None


def offences_in_test(module: str, tree: ast.Module, path: Path) -> dict[str, str]:
    return {
        f"{path.relative_to(TESTS.parent)}:{line} imports {name}": why
        for name, line in imported_names(module, tree, path)
        if (why := import_offence_in_tests(name)) is not None
    }


def test_no_test_imports_a_private_module_or_another_test_module() -> None:
    files = suite_files()
    assert {"tests.conftest", "tests.support.ledger", "tests.test_architecture"} <= set(files)
    offences: dict[str, str] = {}
    for module, path in files.items():
        offences |= offences_in_test(module, ast.parse(path.read_text(), str(path)), path)
    assert not offences, "import a public name, or a helper from tests/support:\n" + "\n".join(
        f"{where} ({why})" for where, why in offences.items()
    )


def test_the_test_import_check_sees_each_offence() -> None:
    path = TESTS / "test_example.py"
    source = """
from teegate.store import Ledger, _sqlite_writer
from teegate.upstream._sse import MAX_EVENT_BYTES
import teegate.catalog._sync
from tests.test_billing_rules import MODEL
from . import test_ledger_contract
from .support.ledger import a_hold
from tests.support.chat import FakeUpstream
from teegate.store.sqlite import SqliteWriter
"""
    offences = offences_in_test("tests.test_example", ast.parse(source), path)
    assert sorted(offences) == [
        "tests/test_example.py:2 imports teegate.store._sqlite_writer",
        "tests/test_example.py:3 imports teegate.upstream._sse",
        "tests/test_example.py:3 imports teegate.upstream._sse.MAX_EVENT_BYTES",
        "tests/test_example.py:4 imports teegate.catalog._sync",
        "tests/test_example.py:5 imports tests.test_billing_rules",
        "tests/test_example.py:5 imports tests.test_billing_rules.MODEL",
        "tests/test_example.py:6 imports tests.test_ledger_contract",
    ]


def environment_reads(tree: ast.Module) -> Iterator[int]:
    """Lines that read `os.environ` (setting a variable for a child process is no read)."""
    written = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript) and not isinstance(node.ctx, ast.Load)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in {"environ", "getenv", "getenvb"} for alias in node.names):
                yield node.lineno
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in {"environ", "getenv", "getenvb"}
            and id(node) not in written
        ):
            yield node.lineno


def test_config_is_the_one_reader_of_the_environment() -> None:
    reads = [
        f"{path.relative_to(SRC)}:{line}"
        for module, path in MODULES.items()
        if module != "teegate.config"
        for line in environment_reads(ast.parse(path.read_text(), str(path)))
    ]
    assert not reads, "read settings through teegate.config instead:\n" + "\n".join(reads)


# ---- __all__ ----


def public_surfaces() -> list[str]:
    """Every package, and every public module that only re-exports (an edge such as
    teegate.attestation.http)."""
    surfaces = []
    for module, path in MODULES.items():
        if module == "teegate" or any(p.startswith("_") for p in module.split(".")):
            continue
        if path.name == "__init__.py" or _only_reexports(ast.parse(path.read_text())):
            surfaces.append(module)
    return surfaces


def _only_reexports(tree: ast.Module) -> bool:
    def allowed(node: ast.stmt) -> bool:
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        dunder_all = isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        )
        return docstring or dunder_all or isinstance(node, ast.Import | ast.ImportFrom)

    return any(isinstance(n, ast.ImportFrom) for n in tree.body) and all(map(allowed, tree.body))


def ruff_sort_key(name: str) -> tuple[int, list[str | int]]:
    """RUF022's order: SCREAMING_CASE, then CamelCase, then the rest, each naturally."""
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    natural: list[str | int] = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    return kind, natural


def public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not (name == "annotations" and value.__class__.__name__ == "_Feature")
    }


SURFACES = public_surfaces()


def test_the_surfaces_include_the_edges() -> None:
    assert {"teegate.attestation.http", "teegate.ratelimit.redis", "teegate.billing"} <= set(
        SURFACES
    )


@pytest.mark.parametrize("surface", SURFACES)
def test_all_is_sorted_and_complete(surface: str) -> None:
    module = importlib.import_module(surface)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{surface} has no __all__"
    assert list(exported) == sorted(exported, key=ruff_sort_key), f"{surface}.__all__ unsorted"
    assert len(set(exported)) == len(exported), f"{surface}.__all__ lists a name twice"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{surface}.__all__ lists names it does not have: {missing}"
    unlisted = sorted(public_names(module) - set(exported))
    assert not unlisted, f"{surface} has public names missing from __all__: {unlisted}"
