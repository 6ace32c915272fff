"""Pure helpers over Avro schemas (JSON form): fingerprints, lint, logical types, samples.

No I/O here. ``fingerprint_of`` is fastavro's CRC-64-AVRO (Rabin) of the Parsing Canonical
Form, as the 8 bytes the single-object encoding puts on the wire (little-endian, like the
Java implementation; the unit tests check the Avro spec's published vectors).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
TIME_LOGICAL_TYPES = frozenset(
    {
        "date",
        "time-millis",
        "time-micros",
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
    }
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Schema = Any  # an Avro schema in JSON form: str | list | dict


def canonical_form(schema: Schema) -> str:
    """The Parsing Canonical Form of a self-contained schema (named types defined inline)."""
    return str(to_parsing_canonical_form(schema))


def fingerprint_of(canonical: str) -> bytes:
    """CRC-64-AVRO of a canonical form, as the 8 wire bytes (little-endian)."""
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def fingerprint_to_int(fp: bytes) -> int:
    """The fingerprint as the signed 64-bit number the Avro spec's test vectors list."""
    return int.from_bytes(fp, "little", signed=True)


def strip_time_logical_types(schema: Schema) -> Schema:
    """A copy of ``schema`` whose date/time logical types are plain int/long.

    The binary encoding and the canonical form are unchanged; fastavro then reads and
    writes these values as integers (``occurred_at_ms``) instead of ``datetime`` objects.
    """
    if isinstance(schema, list):
        return [strip_time_logical_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "logicalType" and isinstance(value, str) and value in TIME_LOGICAL_TYPES:
            continue
        if key in ("type", "items", "values"):
            out[key] = strip_time_logical_types(value)
        elif key == "fields" and isinstance(value, list):
            out[key] = [
                {**f, "type": strip_time_logical_types(f.get("type"))} if isinstance(f, dict) else f
                for f in value
            ]
        else:
            out[key] = value
    return out


# --- lint: what fastavro accepts but the spec (or we) refuse -----------------------------


def lint(schema: Schema, *, require_docs: bool = False) -> list[str]:
    """Problems fastavro's parser lets through: bad names, duplicate fields, missing
    ``fields``, a union default not matching the first branch, fields without ``doc``."""
    problems: list[str] = []
    _lint(schema, "", problems, require_docs)
    return problems


def _lint(schema: Schema, path: str, out: list[str], require_docs: bool) -> None:
    if isinstance(schema, list):
        for i, branch in enumerate(schema):
            _lint(branch, f"{path}[{i}]", out, require_docs)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if isinstance(kind, str) and kind in NAMED:
        name = str(schema.get("name", ""))
        if not all(_NAME.match(part) for part in name.split(".")):
            out.append(f"{path or '<root>'}: invalid name {name!r}")
    if schema.get("logicalType") == "decimal" and kind in ("bytes", "fixed"):
        _lint_decimal(schema, path, out)
    if kind in ("record", "error"):
        _lint_record(schema, path, out, require_docs)
    elif kind == "array":
        _lint(schema.get("items"), f"{path}[]", out, require_docs)
    elif kind == "map":
        _lint(schema.get("values"), f"{path}{{}}", out, require_docs)
    elif isinstance(kind, dict | list):
        _lint(kind, path, out, require_docs)


def _lint_decimal(schema: dict[str, Any], path: str, out: list[str]) -> None:
    """The spec requires a decimal's ``precision`` (fastavro only fails when it reads one)."""
    precision, scale = schema.get("precision"), schema.get("scale", 0)
    if isinstance(precision, bool) or not isinstance(precision, int) or precision < 1:
        out.append(f"{path or '<root>'}: decimal needs an integer precision >= 1")
    elif isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= precision:
        out.append(f"{path or '<root>'}: decimal scale must be an integer in 0..{precision}")


def _lint_record(schema: dict[str, Any], path: str, out: list[str], require_docs: bool) -> None:
    fields = schema.get("fields")
    where = path or "<root>"
    if not isinstance(fields, list):
        out.append(f"{where}: a record needs a 'fields' list")
        return
    seen: set[str] = set()
    for field in fields:
        if not isinstance(field, dict):
            out.append(f"{where}: every field must be an object")
            continue
        name = str(field.get("name", ""))
        fpath = f"{path}.{name}" if path else name
        if not _NAME.match(name):
            out.append(f"{fpath or where}: invalid field name {name!r}")
        if name in seen:
            out.append(f"{fpath}: duplicate field name")
        seen.add(name)
        if require_docs and not str(field.get("doc", "")).strip():
            out.append(f"{fpath}: missing 'doc'")
        ftype = field.get("type")
        if isinstance(ftype, list) and ftype and "default" in field:
            problem = _union_default_problem(ftype[0], field["default"])
            if problem:
                out.append(f"{fpath}: default {field['default']!r} {problem}")
        _lint(ftype, fpath, out, require_docs)


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "string": (str,),
    "bytes": (str,),
}


def _union_default_problem(first: Schema, default: Any) -> str | None:
    kind = first.get("type") if isinstance(first, dict) else first
    if kind in ("array", "map") and not isinstance(default, list if kind == "array" else dict):
        return f"must match the union's first branch ({kind})"
    expected = _PY_TYPES.get(kind) if isinstance(kind, str) else None
    if expected is None:
        return None  # a named or complex first branch: fastavro already checked the value
    if isinstance(default, bool) and kind != "boolean":
        return f"must match the union's first branch ({kind})"
    if not isinstance(default, expected):
        return f"must match the union's first branch ({kind})"
    return None


# --- named types ------------------------------------------------------------------------


def named_types(schema: Schema) -> dict[str, dict[str, Any]]:
    """Full name -> definition of every named type defined in a parsed (full-name) schema."""
    found: dict[str, dict[str, Any]] = {}
    for node in walk(schema):
        if (
            isinstance(node.get("type"), str)
            and node["type"] in NAMED
            and isinstance(node.get("name"), str)
        ):
            found.setdefault(node["name"], node)
    return found


def walk(schema: Schema) -> Iterator[dict[str, Any]]:
    """Every dict node of a schema (named types where defined, not where referenced)."""
    if isinstance(schema, list):
        for branch in schema:
            yield from walk(branch)
    elif isinstance(schema, dict):
        yield schema
        kind = schema.get("type")
        if kind in ("record", "error"):
            for field in schema.get("fields", []):
                yield from walk(field.get("type"))
        elif kind == "array":
            yield from walk(schema.get("items"))
        elif kind == "map":
            yield from walk(schema.get("values"))
        elif isinstance(kind, dict | list):
            yield from walk(kind)


def parse(schema: Schema) -> Any:
    """fastavro's parsed form of a self-contained schema (full names), from a private copy."""
    return parse_schema(copy.deepcopy(schema))


# --- sample data (for resolution checks and tests) --------------------------------------

_MAX_DEPTH = 6
_MAX_RECORD_DEPTH = 40  # a schema whose every value nests deeper has no finite value


def sample_values(parsed: Schema, count: int | None = None) -> list[Any]:
    """Values of a parsed schema that together visit every union branch and enum symbol.

    Raises ValueError when the schema has no finite value (an empty union or enum, a
    record that requires itself).

    Sample ``i`` picks branch ``i mod n`` of every union (and symbol ``i mod n`` of every
    enum); ``count`` defaults to the widest union or enum, capped at 16.
    """
    names = named_types(parsed)
    width = _max_width(parsed)
    n = min(16, width) if count is None else count
    return [_sample(parsed, names, i, 0) for i in range(n)]


def no_value_problem(parsed: Schema) -> str | None:
    """Why a parsed schema has no finite value to write (fastavro's parser lets these
    through: an empty union or enum, a record requiring itself, a fixed size that is not a
    length), or None."""
    try:
        sample_values(parsed)
    except ValueError as exc:
        return f"has no value: {exc}"
    return None


def _max_width(schema: Schema) -> int:
    """The widest union or enum in ``schema`` (1 if none)."""
    widths = [1, len(schema) if isinstance(schema, list) else 1]
    for node in walk(schema):
        if node.get("type") == "enum":
            widths.append(len(node.get("symbols", [])))
        for child in (node.get("type"), node.get("items"), node.get("values")):
            if isinstance(child, list):
                widths.append(len(child))
        for field in node.get("fields", []) if node.get("type") in ("record", "error") else []:
            if isinstance(field.get("type"), list):
                widths.append(len(field["type"]))
    return max(widths)


def _sample(schema: Schema, names: dict[str, dict[str, Any]], i: int, depth: int) -> Any:
    if depth > _MAX_RECORD_DEPTH:
        raise ValueError(f"no value nests fewer than {_MAX_RECORD_DEPTH} records deep")
    if isinstance(schema, list):
        if not schema:
            raise ValueError("an empty union has no value")
        if depth >= _MAX_DEPTH:  # stop nesting: a branch that needs no recursion, if any
            leaves = [b for b in schema if isinstance(b, str) and b in PRIMITIVES]
            if leaves:
                return _primitive("null" if "null" in leaves else leaves[0], i)
        return _sample(schema[i % len(schema)], names, i, depth)
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return _primitive(schema, i)
        return _sample(names[schema], names, i, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, dict | list):
        return _sample(kind, names, i, depth)
    if kind in PRIMITIVES:
        return _primitive(kind, i)
    if kind in ("record", "error"):
        return {
            f["name"]: _sample(f["type"], names, i, depth + 1) for f in schema.get("fields", [])
        }
    if kind == "enum":
        symbols = schema["symbols"]
        if not symbols:
            raise ValueError(f"enum {schema.get('name')} has no symbols")
        return symbols[i % len(symbols)]
    if kind == "fixed":
        size = schema.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"fixed {schema.get('name')}: size {size!r} is not a length")
        return bytes(size)
    if kind == "array":
        return [] if depth >= _MAX_DEPTH else [_sample(schema["items"], names, i, depth + 1)]
    if kind == "map":
        return {} if depth >= _MAX_DEPTH else {"k": _sample(schema["values"], names, i, depth + 1)}
    if isinstance(kind, str):
        return _sample(names[kind], names, i, depth + 1)
    raise ValueError(f"cannot sample schema {schema!r}")


def _primitive(kind: str, i: int) -> Any:
    return {
        "null": None,
        "boolean": i % 2 == 0,
        "int": 7 + i,
        "long": 1_700_000_000_000 + i,
        "float": 1.5,
        "double": 2.5,
        "bytes": b"b",
        "string": f"s{i}",
    }[kind]
