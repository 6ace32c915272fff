"""Only ``streams/worker/compat/`` reaches into faust, aiokafka, mode or aiohttp internals.

Checked in every module that imports one of them, and in all of ``streams/worker``:
- no ``obj._name`` on anything but ``self`` / ``cls`` (``os._exit`` is allowed);
- no ``getattr``/``setattr``/``hasattr``/``delattr`` with a literal ``"_name"``;
- in a class deriving from one of their classes, no ``self._name`` (or ``def _name``) that
  the base already has: that is overriding or reading their private state.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "streams"
COMPAT = SRC / "worker" / "compat"
LIBRARIES = ("faust", "mode", "aiokafka", "aiohttp")
ALLOWED = {("os", "_exit")}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _checked_modules() -> list[Path]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if COMPAT in path.parents:
            continue
        text = path.read_text()
        uses = re.search(rf"^\s*(import|from) ({'|'.join(LIBRARIES)})\b", text, re.M)
        if uses or (SRC / "worker") in path.parents:
            found.append(path)
    return found


def _third_party_privates(module: str, class_name: str) -> set[str]:
    cls = getattr(importlib.import_module(module), class_name)
    names: set[str] = set()
    for base in cls.__mro__[1:]:
        if base.__module__.split(".")[0] not in LIBRARIES:
            continue
        names |= {n for n in vars(base) if _private(n)}
        with contextlib.suppress(OSError, TypeError):
            names |= set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(base)))
    return names


def violations(source: str, module: str | None = None) -> list[str]:
    """What in ``source`` reaches into a private attribute (``module``: its import name,
    to look up the bases of its classes)."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and (owner, node.attr) not in ALLOWED:
                found.append(f"line {node.lineno}: .{node.attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            found.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if module is None or not cls.bases:
            continue
        theirs = _third_party_privates(module, cls.name)
        for node in ast.walk(cls):
            name = None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                name = node.attr if node.value.id == "self" else None
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = node.name
            if name is not None and name in theirs:
                found.append(f"line {node.lineno}: {cls.name} uses its base's {name}")
    return found


def test_only_compat_touches_library_internals() -> None:
    problems = {}
    for path in _checked_modules():
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        found = violations(path.read_text(), module)
        if found:
            problems[str(path.relative_to(SRC))] = found
    assert problems == {}, "private reaches outside worker/compat/ (move them there)"


def test_the_check_sees_each_kind_of_reach() -> None:
    assert violations("consumer._read_offset = x")
    assert violations("getattr(site, '_server', None)")
    assert violations("os._exit(3)") == []
    assert violations("self._mine = 1") == []
    compat_worker = "streams.worker.compat.signals"
    source = "class SignalledWorker(faust.Worker):\n    def _on_sigterm(self): ...\n"
    assert violations(source, compat_worker), "an override of mode's private handler"
    reads = "class SignalledWorker(Base):\n    def mine(self):\n        self._starting_fut\n"
    assert violations(reads, compat_worker), "a read of mode's private state"
    assert "worker/runtime.py" in {str(p.relative_to(SRC)) for p in _checked_modules()}
