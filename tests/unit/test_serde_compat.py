"""check_compatibility: one small schema pair per rule, cross-checked against fastavro."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from streams.errors import SchemaError
from streams.serde import check_compatibility, check_store
from streams.serde.avro import parse
from streams.serde.compat import BACKWARD, FORWARD, _resolve_samples

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def rec(*fields: dict[str, Any], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


BASE = rec(f("id", "string"), f("n", "int"))
COLOR = {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}
TS_MS = {"type": "long", "logicalType": "timestamp-millis"}
TS_US = {"type": "long", "logicalType": "timestamp-micros"}

# (case, old, new, expected problems as (field, direction) pairs)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], set[tuple[str, str]]]] = [
    ("identical", BASE, BASE, set()),
    ("doc only", BASE, rec(f("id", "string", doc="the id"), f("n", "int")), set()),
    ("reordered", BASE, rec(f("n", "int"), f("id", "string")), set()),
    ("add with default", BASE, rec(*BASE["fields"], f("x", "string", default="")), set()),
    ("add without default", BASE, rec(*BASE["fields"], f("x", "string")), {("x", BACKWARD)}),
    (
        "remove with default",
        rec(*BASE["fields"], f("x", "string", default="")),
        BASE,
        set(),
    ),
    ("remove without default", BASE, rec(f("id", "string")), {("n", FORWARD)}),
    (
        "type changed",
        BASE,
        rec(f("id", "string"), f("n", "string")),
        {("n", BACKWARD), ("n", FORWARD)},
    ),
    ("int promoted to long", BASE, rec(f("id", "string"), f("n", "long")), {("n", FORWARD)}),
    ("long narrowed to int", rec(f("id", "string"), f("n", "long")), BASE, {("n", BACKWARD)}),
    ("string to bytes", BASE, rec(f("id", "bytes"), f("n", "int")), set()),
    (
        "made optional",
        BASE,
        rec(f("id", ["null", "string"], default=None), f("n", "int")),
        {("id", FORWARD)},
    ),
    (
        "union branch added",
        rec(f("u", ["null", "string"], default=None)),
        rec(f("u", ["null", "string", "int"], default=None)),
        {("u", FORWARD)},
    ),
    (
        "enum symbol added, no default",
        rec(f("c", COLOR)),
        rec(f("c", {**COLOR, "symbols": ["RED", "GREEN", "BLUE"]})),
        {("c", FORWARD)},
    ),
    (
        "enum symbol added, old reader has a default",
        rec(f("c", {**COLOR, "default": "RED"})),
        rec(f("c", {**COLOR, "symbols": ["RED", "GREEN", "BLUE"], "default": "RED"})),
        set(),
    ),
    (
        "enum symbol removed, no default",
        rec(f("c", COLOR)),
        rec(f("c", {**COLOR, "symbols": ["RED"]})),
        {("c", BACKWARD)},
    ),
    (
        "record renamed",
        BASE,
        rec(*BASE["fields"], name="S"),
        {("<record>", BACKWARD), ("<record>", FORWARD)},
    ),
    (
        "fixed resized",
        rec(f("h", {"type": "fixed", "name": "H", "size": 16})),
        rec(f("h", {"type": "fixed", "name": "H", "size": 32})),
        {("h", BACKWARD), ("h", FORWARD)},
    ),
    (
        "logical type changed",
        rec(f("t", TS_MS)),
        rec(f("t", TS_US)),
        {("t", BACKWARD), ("t", FORWARD)},
    ),
    (
        "logical type added",
        rec(f("t", "long")),
        rec(f("t", TS_MS)),
        {("t", BACKWARD), ("t", FORWARD)},
    ),
    (
        "map values changed",
        rec(f("m", {"type": "map", "values": "string"})),
        rec(f("m", {"type": "map", "values": "int"})),
        {("m{}", BACKWARD), ("m{}", FORWARD)},
    ),
    (
        "array items changed",
        rec(f("a", {"type": "array", "items": "string"})),
        rec(f("a", {"type": "array", "items": "boolean"})),
        {("a[]", BACKWARD), ("a[]", FORWARD)},
    ),
    (
        "nested field added without default",
        rec(f("inner", rec(f("a", "int"), name="In"))),
        rec(f("inner", rec(f("a", "int"), f("b", "int"), name="In"))),
        {("inner.b", BACKWARD)},
    ),
    (
        "field renamed with alias",
        rec(f("old", "int", default=0)),
        rec(f("new", "int", default=0, aliases=["old"])),
        set(),
    ),
]


def _pairs(problems: list[str]) -> set[tuple[str, str]]:
    out = set()
    for p in problems:
        field = p.split(":", 1)[0]
        direction = BACKWARD if p.endswith(f"({BACKWARD})") else FORWARD
        assert p.endswith(f"({direction})"), p
        out.add((field, direction))
    return out


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rules(old: dict[str, Any], new: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    assert _pairs(check_compatibility(old, new)) == expected


# A logical type change is a semantic problem only: fastavro resolves those bytes.
DATA_CASES = [c for c in CASES if not c[0].startswith("logical type")]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES]
)
def test_fastavro_agrees_on_data_compatibility(
    old: dict[str, Any], new: dict[str, Any], expected: set[tuple[str, str]]
) -> None:
    """fastavro fails to resolve sample data exactly where the structural check finds a
    problem, direction by direction."""
    old_p, new_p = parse(old), parse(new)
    backward_fails = bool(_resolve_samples(new_p, old_p))
    forward_fails = bool(_resolve_samples(old_p, new_p))
    assert backward_fails == any(d == BACKWARD for _, d in expected)
    assert forward_fails == any(d == FORWARD for _, d in expected)


def test_problem_text_is_specific() -> None:
    [problem] = check_compatibility(BASE, rec(*BASE["fields"], f("x", "string")))
    assert problem == (
        "x: missing from the writer and the reader has no default "
        f"(a field added or removed needs a default) ({BACKWARD})"
    )
    problems = check_compatibility(BASE, rec(f("id", "string"), f("n", "string")))
    assert f"n: type int cannot be read as string ({BACKWARD})" in problems
    assert f"n: type string cannot be read as int ({FORWARD})" in problems


def test_invalid_schema_dict_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="new schema is not valid Avro"):
        check_compatibility(BASE, rec(f("x", "nope")))


# --- check_store --------------------------------------------------------------------------


def _with_v2(tmp_path: Path, change: Any) -> Path:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, schemas)
    data = json.loads((schemas / "email.requested" / "v1.avsc").read_text())
    change(data)
    (schemas / "email.requested" / "v2.avsc").write_text(json.dumps(data))
    return schemas


def test_repository_schemas_are_compatible() -> None:
    assert check_store(SCHEMAS_DIR) == []


def test_check_store_accepts_a_compatible_version(tmp_path: Path) -> None:
    schemas = _with_v2(
        tmp_path, lambda d: d["fields"].append(f("cc", ["null", "string"], default=None, doc="cc"))
    )
    assert check_store(schemas) == []


def test_check_store_names_file_version_and_field(tmp_path: Path) -> None:
    schemas = _with_v2(tmp_path, lambda d: d["fields"].append(f("cc", "string", doc="cc")))
    [problem] = check_store(schemas)
    assert problem.startswith(f"{schemas}/email.requested/v2.avsc: against v1: cc: missing")
    assert problem.endswith(f"({BACKWARD})")


def test_check_store_checks_every_older_version(tmp_path: Path) -> None:
    schemas = _with_v2(
        tmp_path, lambda d: d["fields"].append(f("cc", "string", default="", doc="cc"))
    )
    data = json.loads((schemas / "email.requested" / "v2.avsc").read_text())
    data["fields"][-1].pop("default")  # v3: cc loses its default...
    data["fields"].append(f("bcc", "string", default="", doc="bcc"))  # ...and gains a sibling
    (schemas / "email.requested" / "v3.avsc").write_text(json.dumps(data))
    problems = check_store(schemas)
    # v3 and v2 both have cc: fine between them; but v3 cannot read v1 data, which lacks it.
    assert len(problems) == 1
    assert "v3.avsc: against v1: cc: missing" in problems[0]
    assert problems[0].endswith(f"({BACKWARD})")


def test_check_store_reports_load_problems(tmp_path: Path) -> None:
    schemas = _with_v2(tmp_path, lambda d: d.update(fields=[]))
    [problem] = check_store(schemas)
    assert "email.requested/v2.avsc: the first field must be" in problem


def test_a_version_differing_only_in_defaults_is_refused(tmp_path: Path) -> None:
    """Defaults are not in the canonical form: such a version would share the fingerprint."""
    schemas = _with_v2(tmp_path, lambda d: d["fields"][3].update(default="fr"))
    [problem] = check_store(schemas)
    assert "email.requested/v2.avsc: same canonical form" in problem
