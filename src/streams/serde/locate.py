"""Which field of a malformed Avro body could not be read, for the DecodeError's message.

fastavro's reader says only what went wrong (``EOFError``, a bad UTF-8 byte, a union
index out of range), not where. Only once a body has failed, its writer schema is read
again field by field: a record's encoding is the concatenation of its fields' encodings,
so nested records (not inside a union) are flattened into their leaf fields, each read
with its own sub-schema until one fails. Never on the happy path.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastavro import schemaless_reader
from fastavro.schema import expand_schema, parse_schema

Leaves = list[tuple[str, Any]]  # (field path, parsed self-contained sub-schema)


def leaf_fields(wire_schema: Any) -> Leaves:
    """The leaf fields of a parsed record schema in wire order; [] for anything else."""
    out: Leaves = []
    _flatten(expand_schema(wire_schema), "", out)
    return out


def _flatten(node: Any, path: str, out: Leaves) -> None:
    if isinstance(node, dict) and node.get("type") in ("record", "error"):
        for field in node.get("fields", []):
            name = f"{path}.{field['name']}" if path else str(field["name"])
            _flatten(field["type"], name, out)
        return
    if isinstance(node, dict) and isinstance(node.get("type"), dict):
        _flatten(node["type"], path, out)
        return
    if path:  # a bare non-record schema has no fields to name
        out.append((path, parse_schema(node, _write_hint=False, _force=True)))


def failing_field(leaves: Leaves, data: bytes, offset: int) -> str | None:
    """``"<field path> at byte <n>: <reason>"`` for the first leaf that cannot be read from
    ``data[offset:]``, or None when every leaf reads (the failure was elsewhere, e.g. in
    resolution to the reader schema)."""
    stream = BytesIO(data)
    stream.seek(offset)
    for path, schema in leaves:
        start = stream.tell()
        try:
            schemaless_reader(stream, schema, None)
        except Exception as exc:  # fastavro raises many types on hostile bytes
            return f"{path} at byte {start}: {type(exc).__name__}: {exc}"
    return None
