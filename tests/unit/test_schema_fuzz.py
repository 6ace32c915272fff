"""Property tests of the schema store: whatever a schema file holds, ``load_versions``
returns versions or raises SchemaError (one ``<file>: <reason>`` line each), and
``check_compatibility`` returns its problems or raises SchemaError — nothing else, for
arbitrary JSON documents and for Avro-shaped ones with every kind of mistake."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import SchemaError
from streams.serde import SchemaStore, check_compatibility, check_store
from streams.serde.versions import load_versions

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
ENVELOPE_DIR = SCHEMAS_DIR / "streams.Envelope"
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
names = st.sampled_from(["R", "S", "t.R", "Color", "streams.Envelope", "", "1bad", "a-b", "x.y.z"])
primitives = st.sampled_from(["null", "boolean", "int", "long", "float", "double", "bytes"])


def _record(fields: list[Any], name: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": fields, **extra}


def avro_like() -> st.SearchStrategy[Any]:
    """Schemas close to valid Avro: every kind of node, with wrong pieces mixed in
    (unknown types, references to undefined or recursive names, bad defaults, aliases
    that are not strings, negative fixed sizes, duplicate enum symbols)."""
    leaf = st.one_of(
        primitives,
        st.just("string"),
        names,  # a reference: maybe defined, maybe not, maybe itself
        st.builds(
            lambda n, s: {"type": "enum", "name": n, "symbols": s},
            names,
            st.lists(st.sampled_from(["A", "B", "A", "1", ""]), max_size=3),
        ),
        st.builds(
            lambda n, k: {"type": "fixed", "name": n, "size": k},
            names,
            st.integers(-2, 4) | st.text(max_size=2),
        ),
        st.builds(
            lambda t, lt: {"type": t, "logicalType": lt},
            primitives,
            st.sampled_from(["timestamp-millis", "date", "decimal", "uuid", "nope"]),
        ),
        json_values,
    )

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        field = st.fixed_dictionaries(
            {"name": st.sampled_from(["a", "b", "a", "envelope", "", "9"]), "type": inner},
            optional={
                "default": json_values,
                "aliases": st.lists(st.sampled_from(["old", 3, None]), max_size=2) | json_values,
                "doc": st.text(max_size=4),
            },
        )
        extra = st.fixed_dictionaries(
            {},
            optional={
                "namespace": st.sampled_from(["t", "", "a.b", 1]),
                "aliases": st.lists(st.sampled_from(["Old", "t.Old", 3]), max_size=2),
            },
        )
        return st.one_of(
            st.builds(_record, st.lists(field, max_size=4), names, extra),
            st.lists(inner, max_size=3),  # unions (maybe nested, maybe duplicated)
            st.builds(lambda i: {"type": "array", "items": i}, inner),
            st.builds(lambda v: {"type": "map", "values": v}, inner),
            st.builds(lambda t: {"type": t}, inner),
        )

    return st.recursive(leaf, extend, max_leaves=12)


def _compat_or_schema_error(old: Any, new: Any) -> None:
    try:
        problems = check_compatibility(old, new)
    except SchemaError as exc:
        assert str(exc)
        return
    assert all(isinstance(p, str) and p for p in problems)


@FUZZ
@given(avro_like(), avro_like())
def test_check_compatibility_of_arbitrary_schemas(old: Any, new: Any) -> None:
    _compat_or_schema_error(old, new)


@FUZZ
@given(avro_like())
def test_a_schema_is_compatible_with_itself_or_invalid(schema: Any) -> None:
    """(Found a schema with a duplicate field name reported incompatible with itself:
    check_compatibility now refuses what the lint refuses.)"""
    try:
        problems = check_compatibility(schema, schema)
    except SchemaError:
        return
    assert problems == [], problems


NO_VALUE = [
    # a record with a required field of its own type: RecursionError in the samples
    {"type": "record", "name": "R", "fields": [{"name": "a", "type": "R"}]},
    # an empty union: ZeroDivisionError (branch i % 0)
    {"type": "record", "name": "R", "fields": [{"name": "a", "type": []}]},
    # a fixed size that is a string: TypeError (bytes("1"))
    {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": {"type": "fixed", "name": "F", "size": "1"}}],
    },
]


@pytest.mark.parametrize("schema", NO_VALUE, ids=["self-loop", "empty-union", "fixed-str"])
def test_regression_schemas_without_a_value_are_refused(scratch: Path, schema: Any) -> None:
    """Found by the properties above: fastavro's parser accepts these, then generating
    sample data (the second opinion of check_compatibility) crashed. Now SchemaError, and
    load_versions refuses the file."""
    with pytest.raises(SchemaError, match="has no value"):
        check_compatibility(schema, schema)
    fields = [{"name": "envelope", "type": "streams.Envelope", "doc": "d"}, *schema["fields"]]
    fields[1] = {**fields[1], "doc": "d"}
    path = scratch / "fuzz.thing" / "v1.avsc"
    path.write_text(json.dumps({"type": "record", "name": "fuzz.T", "fields": fields}))
    with pytest.raises(SchemaError) as err:
        load_versions(scratch)
    assert str(err.value).startswith(f"{path}: ")


def test_regression_lint_of_a_type_that_is_an_object(scratch: Path) -> None:
    """Found by the properties above: a field type ``{"type": {"type": "int"}}`` made the
    lint raise TypeError (a dict tested against a frozenset of names) out of
    load_versions; now the file is reported like any other invalid schema."""
    fields = [
        {"name": "envelope", "type": "streams.Envelope", "doc": "d"},
        {"name": "a", "type": {"type": {"type": "int"}}, "doc": "d"},
    ]
    path = scratch / "fuzz.thing" / "v1.avsc"
    path.write_text(json.dumps({"type": "record", "name": "fuzz.T", "fields": fields}))
    with pytest.raises(SchemaError, match="not a valid Avro schema") as err:
        load_versions(scratch)
    assert str(err.value).startswith(f"{path}: ")


def test_regression_aliases_that_are_not_strings() -> None:
    """Found by the properties above: an alias that is not a string (``"aliases": [3]``)
    raised TypeError in the structural check."""
    old = {"type": "record", "name": "t.R", "fields": [{"name": "a", "type": "int"}]}
    new = {"type": "record", "name": "t.S", "aliases": [3], "fields": old["fields"]}
    problems = check_compatibility(old, new)
    assert problems and all("(add an alias)" in p for p in problems)


# --- schema files on disk ----------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Any:
    """A schemas dir with the real envelope and an event type ``fuzz.thing``."""
    root = Path(tempfile.mkdtemp(prefix="schema-fuzz-"))
    shutil.copytree(ENVELOPE_DIR, root / "streams.Envelope")
    (root / "fuzz.thing").mkdir()
    yield root
    shutil.rmtree(root)


def _event_schema(rest: list[Any], extra: dict[str, Any]) -> dict[str, Any]:
    fields = [{"name": "envelope", "type": "streams.Envelope", "doc": "meta"}, *rest]
    return {"type": "record", "name": "fuzz.Thing", "fields": fields, **extra}


documents = st.one_of(
    st.binary(max_size=40),
    json_values.map(json.dumps),
    avro_like().map(json.dumps),
    st.builds(
        _event_schema,
        st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["a", "b", "a"]), "type": avro_like()},
                optional={"doc": st.sampled_from(["d", ""]), "default": json_values},
            ),
            max_size=3,
        ),
        st.fixed_dictionaries({}, optional={"envelope_version": json_values}),
    ).map(json.dumps),
)


@settings(FUZZ, max_examples=150)
@given(documents)
def test_load_versions_of_an_arbitrary_file(scratch: Path, text: str | bytes) -> None:
    path = scratch / "fuzz.thing" / "v1.avsc"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    try:
        versions = load_versions(scratch)
    except SchemaError as exc:
        lines = str(exc).splitlines()
        assert lines == [line for line in lines if line.startswith(f"{path}: ")], lines
        return
    store = SchemaStore(versions)  # what loads also builds a store
    assert "fuzz.thing" in store.event_types
    assert check_store(scratch) == []  # one version: nothing to be incompatible with


def test_regression_a_name_holding_a_line_break_stays_on_its_line(scratch: Path) -> None:
    """Found by fuzz/fuzz_schema.py: a field name ``"X\\r"`` split its problem over two
    lines, so a line no longer started with ``<file>: ``."""
    fields = [
        {"name": "envelope", "type": "streams.Envelope", "doc": "d"},
        {"name": "X\r", "type": "int", "doc": "d"},
        {"name": "Y\u2028", "type": "int", "doc": "d"},
    ]
    path = scratch / "fuzz.thing" / "v1.avsc"
    path.write_text(json.dumps({"type": "record", "name": "fuzz.T", "fields": fields}))
    with pytest.raises(SchemaError) as err:
        load_versions(scratch)
    lines = str(err.value).splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{path}: ") for line in lines), lines
    assert "invalid field name 'X\\r'" in lines[0]
