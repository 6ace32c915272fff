"""atheris harness: the schema store (schema files, their lint, compatibility checks).

The input is a schema document: arbitrary bytes, a mutated copy of one of the
repository's schema files, or a schema built from fuzzer choices (every kind of node,
references to defined, undefined and recursive names, bad sizes, aliases, defaults). The
oracle: ``check_compatibility(doc, other)`` returns problems or raises SchemaError, and
``load_versions`` over a directory holding the document as ``fuzz.thing/v1.avsc`` (every
8th input; it touches the disk) returns versions or raises SchemaError whose every line
names the file. Anything else is a crash.

    .venv/bin/python fuzz/fuzz_schema.py -runs=20000           # what CI runs (seeded)
    .venv/bin/python fuzz/fuzz_schema.py -max_total_time=600
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["streams"]):
    from _common import ROOT, STORE

    from streams.errors import SchemaError
    from streams.serde import check_compatibility
    from streams.serde.versions import load_versions

REAL = [json.dumps(v.definition) for v in STORE.all_versions]
SCRATCH = Path(tempfile.mkdtemp(prefix="fuzz-schema-"))
shutil.copytree(ROOT / "schemas" / "streams.Envelope", SCRATCH / "streams.Envelope")
(SCRATCH / "fuzz.thing").mkdir()
FILE = SCRATCH / "fuzz.thing" / "v1.avsc"
NAMES = ["R", "S", "t.R", "E", "streams.Envelope", "", "1x", "a.b.c"]
PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]


def schema_of(fdp: Any, depth: int = 0) -> Any:
    """A schema-shaped value chosen by the fuzzer."""
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 4 else 3)
    if kind == 0:
        return PRIMITIVES[fdp.ConsumeIntInRange(0, len(PRIMITIVES) - 1)]
    if kind == 1:
        return NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
    if kind == 2:
        symbols = [fdp.ConsumeUnicode(2) for _ in range(fdp.ConsumeIntInRange(0, 3))]
        return {"type": "enum", "name": NAMES[fdp.ConsumeIntInRange(0, 7)], "symbols": symbols}
    if kind == 3:
        size: Any = fdp.ConsumeIntInRange(-2, 4) if fdp.ConsumeBool() else fdp.ConsumeUnicode(2)
        return {"type": "fixed", "name": NAMES[fdp.ConsumeIntInRange(0, 7)], "size": size}
    if kind in (4, 5):
        fields = []
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            field: dict[str, Any] = {
                "name": fdp.ConsumeUnicode(2),
                "type": schema_of(fdp, depth + 1),
            }
            if fdp.ConsumeBool():
                field["default"] = json_of(fdp)
            if fdp.ConsumeBool():
                field["aliases"] = json_of(fdp)
            fields.append(field)
        node = {"type": "record", "name": NAMES[fdp.ConsumeIntInRange(0, 7)], "fields": fields}
        if fdp.ConsumeBool():
            node["aliases"] = json_of(fdp)
        return node
    if kind == 6:
        return [schema_of(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if kind == 7:
        return {"type": "array", "items": schema_of(fdp, depth + 1)}
    if kind == 8:
        return {"type": "map", "values": schema_of(fdp, depth + 1)}
    return {"type": schema_of(fdp, depth + 1), "logicalType": fdp.ConsumeUnicode(4)}


def json_of(fdp: Any) -> Any:
    kind = fdp.ConsumeIntInRange(0, 4)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeInt(4)
    if kind == 2:
        return fdp.ConsumeUnicode(3)
    if kind == 3:
        return [fdp.ConsumeUnicode(2) for _ in range(fdp.ConsumeIntInRange(0, 2))]
    return {fdp.ConsumeUnicode(2): fdp.ConsumeUnicode(2)}


def document_of(data: bytes) -> tuple[bytes, Any, bool]:
    """(file bytes, the other schema to compare with, whether to load it from disk)."""
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    on_disk = fdp.ConsumeIntInRange(0, 7) == 0
    other = json.loads(REAL[fdp.ConsumeIntInRange(0, len(REAL) - 1)])
    if mode == 0:
        return fdp.ConsumeBytes(fdp.remaining_bytes()), other, on_disk
    if mode == 1:
        text = bytearray(REAL[fdp.ConsumeIntInRange(0, len(REAL) - 1)].encode())
        for _ in range(fdp.ConsumeIntInRange(1, 6)):
            text[fdp.ConsumeIntInRange(0, len(text) - 1)] = fdp.ConsumeIntInRange(32, 126)
        return bytes(text), other, on_disk
    schema = schema_of(fdp)
    if isinstance(schema, dict) and schema.get("type") == "record" and fdp.ConsumeBool():
        envelope = {"name": "envelope", "type": "streams.Envelope", "doc": "d"}
        schema["fields"] = [envelope, *({**f, "doc": "d"} for f in schema["fields"])]
    return json.dumps(schema).encode(), other if fdp.ConsumeBool() else schema, on_disk


def check(text: bytes, other: Any, on_disk: bool) -> None:
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if doc is not None:
        for old, new in ((doc, other), (other, doc)):
            try:
                problems = check_compatibility(old, new)
            except SchemaError as exc:
                if not str(exc):
                    raise AssertionError("SchemaError without a message") from None
                continue
            if not all(isinstance(p, str) and p for p in problems):
                raise AssertionError(f"problems not one line each: {problems!r}")
    if not on_disk:
        return
    FILE.write_bytes(text)
    try:
        load_versions(SCRATCH)
    except SchemaError as exc:
        lines = str(exc).splitlines()
        if not lines or any(not line.startswith(f"{FILE}: ") for line in lines):
            raise AssertionError(f"a problem that does not name the file: {lines!r}") from None


def test_one_input(data: bytes) -> None:
    check(*document_of(data))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
