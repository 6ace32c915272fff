"""CRC-64-AVRO fingerprints and the single-object header, against the Avro spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.serde import SINGLE_OBJECT_MARKER, SchemaStore
from streams.serde.avro import canonical_form, fingerprint_of, fingerprint_to_int, parse

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"

# Apache Avro share/test/data/schema-tests.txt: (input, canonical form, fingerprint as the
# signed 64-bit number Java's SchemaNormalization.parsingFingerprint64 returns).
SPEC_VECTORS = [
    ('"null"', '"null"', 7195948357588979594),
    ('{"type":"null"}', '"null"', 7195948357588979594),
    ('"boolean"', '"boolean"', -6970731678124411036),
    ('"int"', '"int"', 8247732601305521295),
    ('"long"', '"long"', -3434872931120570953),
    ('"float"', '"float"', 5583340709985441680),
    ('"double"', '"double"', -8181574048448539266),
    ('"string"', '"string"', -8142146995180207161),
    (
        '{"type":"fixed","name":"foo","size":15}',
        '{"name":"foo","type":"fixed","size":15}',
        1756455273707447556,
    ),
    (
        '{"type":"record","name":"foo","fields":[{"name":"f1","type":"boolean"}]}',
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
        7843277075252814651,
    ),
    (
        '{"name":"PigValue","type":"record",'
        '"fields":[{"name":"value","type":["null","int","long","PigValue"]}]}',
        '{"name":"PigValue","type":"record",'
        '"fields":[{"name":"value","type":["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


def _rabin64(data: bytes) -> int:
    """The spec's reference algorithm, written out independently of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize(("schema", "canonical", "expected"), SPEC_VECTORS)
def test_fingerprint_matches_avro_spec_vectors(schema: str, canonical: str, expected: int) -> None:
    import json

    form = canonical_form(parse(json.loads(schema)))
    assert form == canonical
    fp = fingerprint_of(form)
    assert len(fp) == 8
    assert fingerprint_to_int(fp) == expected
    # the wire carries the 64-bit value little-endian
    assert fp == (expected & (2**64 - 1)).to_bytes(8, "little")


def test_every_stored_version_fingerprint_equals_independent_rabin() -> None:
    store = SchemaStore.load(SCHEMAS_DIR)
    for version in store.all_versions:
        expected = _rabin64(version.canonical.encode("utf-8")).to_bytes(8, "little")
        assert version.fingerprint == expected, version.label
        assert version.prefix == SINGLE_OBJECT_MARKER + expected
        assert version.header == f"{version.event_type}@{expected.hex()}"


def test_canonical_form_inlines_the_envelope() -> None:
    """The fingerprint must cover the envelope, not just its name."""
    store = SchemaStore.load(SCHEMAS_DIR)
    version = store.latest("email.requested")
    assert '"name":"streams.Envelope","type":"record"' in version.canonical
    assert '"occurred_at_ms"' in version.canonical
