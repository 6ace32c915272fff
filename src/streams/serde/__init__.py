"""Event serialization: Avro schemas from ``schemas/``, single-object encoding, resolution.

``SchemaStore.load(dir)`` validates and parses every version once; ``encode`` writes an
event with its type's latest version, ``decode``/``decode_event`` read any released
version into the latest. ``check_compatibility``/``check_store`` guard schema evolution.
"""

from streams.serde.codec import (
    Codec,
    ConfluentCodec,
    InMemoryRegistry,
    SchemaRegistry,
    SingleObjectCodec,
)
from streams.serde.compat import check_compatibility, check_store
from streams.serde.store import InvalidEvent, SchemaStore
from streams.serde.versions import ENVELOPE_TYPE, SINGLE_OBJECT_MARKER, SchemaVersion

__all__ = [
    "ENVELOPE_TYPE",
    "SINGLE_OBJECT_MARKER",
    "Codec",
    "ConfluentCodec",
    "InMemoryRegistry",
    "InvalidEvent",
    "SchemaRegistry",
    "SchemaStore",
    "SchemaVersion",
    "SingleObjectCodec",
    "check_compatibility",
    "check_store",
]
