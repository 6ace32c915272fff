"""Schema compatibility, both directions (Avro "full" compatibility).

A new version must read data written with an old one (backward: a worker upgraded first)
and an old version must read data written with the new one (forward: a producer upgraded
first). The rules are Avro's schema resolution:

- a reader field missing from the writer needs a default (so adding a field, or removing
  one, needs a default);
- types must match, or be a legal promotion (int -> long/float/double, long -> float/double,
  float -> double, string <-> bytes) in the direction the data flows;
- every branch of a writer union must be readable; a reader union must accept the writer;
- named types keep their full name (or list the old one in ``aliases``); enums need a
  ``default`` to read a symbol they do not know; fixed sizes stay equal;
- logical types may not change (e.g. timestamp-millis to timestamp-micros).

The structural check gives precise messages; fastavro then resolves generated sample data
(every union branch and enum symbol) as a second opinion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from streams.errors import SchemaError
from streams.serde import avro
from streams.serde.versions import SchemaVersion, load_versions

# (writer type, reader type) pairs Avro resolves by promotion
PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)

BACKWARD = "the new version cannot read data written with the old one"
FORWARD = "the old version cannot read data written with the new one"


@dataclass(frozen=True)
class _Side:
    schema: Any  # parsed
    names: dict[str, dict[str, Any]]

    def deref(self, node: Any) -> Any:
        if isinstance(node, str) and node in self.names:
            return self.names[node]
        if isinstance(node, dict) and isinstance(node.get("type"), dict | list):
            return self.deref(node["type"])
        return node


def check_compatibility(
    old: SchemaVersion | dict[str, Any], new: SchemaVersion | dict[str, Any]
) -> list[str]:
    """Problems that make ``new`` incompatible with ``old``, each ``<field>: <reason> (<which
    direction fails>)``; empty means compatible both ways. A dict must be a self-contained
    Avro schema; raises SchemaError when it is not valid Avro (fastavro's parser, then the
    lint), or has no value to write."""
    old_parsed, new_parsed = _parsed(old, "old"), _parsed(new, "new")
    problems = [f"{p} ({BACKWARD})" for p in _can_read(new_parsed, old_parsed)]
    problems += [f"{p} ({FORWARD})" for p in _can_read(old_parsed, new_parsed)]
    if not problems:
        problems += [f"{p} ({BACKWARD})" for p in _resolve_samples(new_parsed, old_parsed)]
        problems += [f"{p} ({FORWARD})" for p in _resolve_samples(old_parsed, new_parsed)]
    return problems


def check_store(schemas_dir: Path) -> list[str]:
    """Every problem in ``schemas_dir``: invalid files, then, per type, each newer version
    against every older one (``<file>: against v<N>: <field>: <reason> (...)``)."""
    try:
        versions = load_versions(schemas_dir)
    except SchemaError as exc:
        return str(exc).splitlines()
    by_type: dict[str, list[SchemaVersion]] = {}
    for v in versions:
        by_type.setdefault(v.event_type, []).append(v)
    problems: list[str] = []
    for event_type in sorted(by_type):
        ordered = sorted(by_type[event_type], key=lambda v: v.version)
        for i, new in enumerate(ordered):
            for old in ordered[:i]:
                problems += [
                    f"{new.path}: against v{old.version}: {p}"
                    for p in check_compatibility(old, new)
                ]
    return problems


def _parsed(schema: SchemaVersion | dict[str, Any], label: str) -> Any:
    if isinstance(schema, SchemaVersion):
        return schema.schema
    try:
        parsed = avro.parse(schema)
    except Exception as exc:  # fastavro's parser raises several unrelated types
        raise SchemaError(
            f"{label} schema is not valid Avro: {type(exc).__name__}: {exc}"
        ) from None
    problem = avro.no_value_problem(parsed)
    if problem:
        raise SchemaError(f"{label} schema {problem}")
    lint = avro.lint(schema)  # e.g. a duplicate field name, which fastavro accepts
    if lint:
        raise SchemaError(f"{label} schema is not valid Avro: {'; '.join(lint)}")
    return parsed


# --- structural resolution check ---------------------------------------------------------


def _can_read(reader: Any, writer: Any) -> list[str]:
    r = _Side(reader, avro.named_types(reader))
    w = _Side(writer, avro.named_types(writer))
    return _check(r, w, reader, writer, "", set())


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, dict):
        return str(node.get("type"))
    return str(node)


def _describe(node: Any) -> str:
    if isinstance(node, list):
        return "[" + ", ".join(_describe(b) for b in node) + "]"
    if isinstance(node, dict):
        kind = node.get("type")
        if kind in avro.NAMED:
            return f"{kind} {node.get('name')}"
        if kind == "array":
            return f"array<{_describe(node.get('items'))}>"
        if kind == "map":
            return f"map<{_describe(node.get('values'))}>"
        if "logicalType" in node:
            return f"{kind} ({node['logicalType']})"
        return str(kind)
    return str(node)


def _check(
    r: _Side, w: _Side, rnode: Any, wnode: Any, path: str, seen: set[tuple[str, str]]
) -> list[str]:
    rnode, wnode = r.deref(rnode), w.deref(wnode)
    where = path or "<record>"
    if isinstance(wnode, list):
        return [p for branch in wnode for p in _check(r, w, rnode, branch, path, seen)]
    if isinstance(rnode, list):
        if any(not _check(r, w, branch, wnode, path, seen) for branch in rnode):
            return []
        return [f"{where}: {_describe(wnode)} is not readable as any of {_describe(rnode)}"]
    rk, wk = _kind(rnode), _kind(wnode)
    if rk != wk:
        if (wk, rk) in PROMOTIONS and _logical(rnode) == _logical(wnode):
            return []
        return [f"{where}: type {_describe(wnode)} cannot be read as {_describe(rnode)}"]
    if rk in avro.NAMED:
        problem = _name_problem(rnode, wnode, where)
        if problem:
            return [problem]
    if rk in ("record", "error"):
        key = (rnode["name"], wnode["name"])
        if key in seen:
            return []
        return _check_record(r, w, rnode, wnode, path, seen | {key})
    if rk == "enum":
        return _check_enum(rnode, wnode, where)
    if rk == "fixed" and rnode.get("size") != wnode.get("size"):
        return [f"{where}: fixed size {wnode.get('size')} cannot be read as {rnode.get('size')}"]
    if rk == "array":
        return _check(r, w, rnode["items"], wnode["items"], f"{path}[]", seen)
    if rk == "map":
        return _check(r, w, rnode["values"], wnode["values"], f"{path}{{}}", seen)
    if _logical(rnode) != _logical(wnode):
        return [
            f"{where}: logical type {_logical(wnode) or 'none'} changed to "
            f"{_logical(rnode) or 'none'}"
        ]
    return []


def _logical(node: Any) -> str | None:
    return node.get("logicalType") if isinstance(node, dict) else None


def _name_problem(rnode: dict[str, Any], wnode: dict[str, Any], where: str) -> str | None:
    rname, wname = rnode.get("name"), wnode.get("name")
    if rname == wname or wname in _aliases(rnode):
        return None
    return f"{where}: named type {wname} cannot be read as {rname} (add an alias)"


def _aliases(node: dict[str, Any]) -> set[str]:
    name = str(node.get("name", ""))
    namespace = name.rpartition(".")[0]
    out = set()
    for alias in _string_aliases(node):
        out.add(alias if "." in alias or not namespace else f"{namespace}.{alias}")
    return out


def _string_aliases(node: dict[str, Any]) -> list[str]:
    """The aliases that can name anything (fastavro's parser does not check them)."""
    aliases = node.get("aliases")
    return [a for a in aliases if isinstance(a, str)] if isinstance(aliases, list) else []


def _check_record(
    r: _Side,
    w: _Side,
    rnode: dict[str, Any],
    wnode: dict[str, Any],
    path: str,
    seen: set[tuple[str, str]],
) -> list[str]:
    wfields = {f["name"]: f for f in wnode.get("fields", [])}
    problems: list[str] = []
    for field in rnode.get("fields", []):
        name = field["name"]
        fpath = f"{path}.{name}" if path else name
        match = wfields.get(name) or next(
            (wfields[a] for a in _string_aliases(field) if a in wfields), None
        )
        if match is not None:
            problems += _check(r, w, field["type"], match["type"], fpath, seen)
        elif "default" not in field:
            problems.append(
                f"{fpath}: missing from the writer and the reader has no default"
                " (a field added or removed needs a default)"
            )
    return problems


def _check_enum(rnode: dict[str, Any], wnode: dict[str, Any], where: str) -> list[str]:
    unknown = [s for s in wnode.get("symbols", []) if s not in rnode.get("symbols", [])]
    if unknown and "default" not in rnode:
        return [f"{where}: enum symbols {unknown} unknown to the reader, which has no default"]
    return []


# --- second opinion: fastavro resolves sample data ---------------------------------------


def _resolve_samples(reader: Any, writer: Any) -> list[str]:
    problems: list[str] = []
    try:
        samples = avro.sample_values(writer)
    except ValueError as exc:  # e.g. a record that requires itself: no value to write
        return [f"<record>: no sample data: {exc}"]
    for sample in samples:
        out = BytesIO()
        try:
            schemaless_writer(out, writer, sample)
            out.seek(0)
            schemaless_reader(out, writer, reader)
        except Exception as exc:  # any failure is the finding
            shown = json.dumps(sample, default=repr)[:120]
            problems.append(f"<record>: fastavro cannot resolve sample {shown}: {exc}")
            break
    return problems
