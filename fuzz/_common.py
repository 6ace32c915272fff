"""Shared by the atheris harnesses: the repository's schemas, the worker's decoder, seeds.

Imported by each harness inside ``atheris.instrument_imports`` so streams' code is
instrumented for coverage; also importable without atheris (the pytest replays use it).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_writer

from streams.catalog import load_catalog
from streams.crypto import StaticKeyring, decoder_for, sealer_for
from streams.events import EVENT_MODELS, EXAMPLE_PAYLOADS, build_event
from streams.publish.prepare import Preparer
from streams.serde import SchemaStore
from streams.serde.avro import sample_values
from streams.serde.versions import ENVELOPE_TYPE

ROOT = Path(__file__).resolve().parents[1]
STORE = SchemaStore.load(ROOT / "schemas")
CATALOG = load_catalog(ROOT / "topics.yaml")
KEYS = StaticKeyring({"k1": bytes(range(32))})
KEY_FIELDS = {name: family.key_field for name, family in CATALOG.families.items()}
WORKER_DECODER: Any = decoder_for(STORE, key_fields=KEY_FIELDS, keys=KEYS)


def _seeds() -> list[bytes]:
    """Valid records: every type's example (sealed where the schema says so, as the SDK
    writes it) and sample values of EVERY version, old ones included."""
    preparer = Preparer(
        CATALOG,
        STORE,
        topic_prefix="",
        producer_name="fuzz",
        sealer=sealer_for(STORE, key_fields=KEY_FIELDS, keys=KEYS),
    )
    out = [preparer.record(t, EXAMPLE_PAYLOADS[t])[2] for t in sorted(EVENT_MODELS)]
    out += [STORE.encode(build_event(t, EXAMPLE_PAYLOADS[t])) for t in sorted(EVENT_MODELS)]
    for version in STORE.all_versions:
        if version.event_type == ENVELOPE_TYPE:
            continue
        for sample in sample_values(version.wire_schema, 3):
            body = BytesIO()
            schemaless_writer(body, version.wire_schema, sample)
            out.append(version.prefix + body.getvalue())
    return out


SEEDS = _seeds()
FINGERPRINTS = sorted(v.fingerprint for v in STORE.all_versions if v.event_type != ENVELOPE_TYPE)


def zigzag_varint(n: int) -> bytes:
    """Avro's long encoding (zig-zag, then base-128 varint) of a signed 64-bit ``n``."""
    z = ((n << 1) ^ (n >> 63)) & (2**64 - 1)
    out = bytearray()
    while True:
        byte, z = z & 0x7F, z >> 7
        out.append(byte | 0x80 if z else byte)
        if not z:
            return bytes(out)
