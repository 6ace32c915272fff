"""``core/`` imports only the standard library and ``streams.core`` itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "streams" / "core"
MODULES = sorted(CORE.glob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every imported module, at any depth (functions, ``if TYPE_CHECKING:``, try blocks)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside streams.core
                found.append((node.lineno, "streams.core." + (node.module or "")))
            elif node.module:
                found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        ):
            found.append((node.lineno, "<dynamic import>"))
    return found


def _allowed(module: str) -> bool:
    top = module.partition(".")[0]
    return (
        top in sys.stdlib_module_names
        or module == "streams.core"
        or (module.startswith("streams.core."))
    )


def test_the_core_has_modules() -> None:
    assert len(MODULES) >= 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_imports_only_the_standard_library(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    foreign = [f"{path.name}:{line}: {name}" for line, name in _imports(tree) if not _allowed(name)]
    assert foreign == []


@pytest.mark.parametrize(
    "source",
    [
        "import pydantic",
        "from streams.catalog import RetryPolicy",
        "from streams import errors",
        "def f():\n    import faust",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from streams.settings import S",
        "import importlib\nimportlib.import_module('yaml')",
    ],
)
def test_the_check_sees_foreign_imports_wherever_they_are(source: str) -> None:
    assert [name for _, name in _imports(ast.parse(source)) if not _allowed(name)]


def test_the_check_allows_the_standard_library_and_the_core() -> None:
    source = "import math\nfrom collections.abc import Mapping\nfrom streams.core import h\n"
    source += "from . import topology\nfrom streams.core.errors import Retryable\n"
    assert [name for _, name in _imports(ast.parse(source)) if not _allowed(name)] == []
