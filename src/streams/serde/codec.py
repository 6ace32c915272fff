"""Wire framing of an Avro body: which writer schema wrote it, and where the body starts.

- ``SingleObjectCodec`` (default): Avro single-object encoding, ``C3 01`` + the writer
  schema's 8-byte CRC-64-AVRO fingerprint (little-endian) + the body. No registry needed:
  the fingerprint names a version in ``schemas/``.
- ``ConfluentCodec``: the Confluent wire format, ``00`` + a 4-byte big-endian schema id +
  the body, with ids from a schema registry. Kept as an option (consoles with a registry
  configured decode it). This repo runs no registry server and ships no HTTP client: pass
  any object implementing ``SchemaRegistry``; ``InMemoryRegistry`` is for tests only.

A codec only frames; ``SchemaStore`` encodes and decodes the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from fastavro.schema import SchemaParseException, UnknownType

from streams.core.headers import AVRO_CONTENT_TYPE
from streams.errors import DecodeError
from streams.serde import avro
from streams.serde.versions import SINGLE_OBJECT_MARKER, SchemaVersion

SINGLE_OBJECT_HEADER_BYTES = 10
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_BYTES = 5
CONFLUENT_CONTENT_TYPE = "application/vnd.confluent.avro"


@runtime_checkable
class Codec(Protocol):
    """Frames Avro bodies. ``content_type`` is the value of the ``content-type`` header."""

    content_type: str

    def prefix(self, version: SchemaVersion) -> bytes:
        """The bytes written before a body encoded with ``version``."""
        ...

    def writer_of(
        self, data: bytes, by_fingerprint: Mapping[bytes, SchemaVersion]
    ) -> tuple[SchemaVersion, int]:
        """The writer schema of ``data`` and the offset of its body; raises DecodeError."""
        ...


class SingleObjectCodec:
    """Avro single-object encoding (the default)."""

    content_type = AVRO_CONTENT_TYPE

    def prefix(self, version: SchemaVersion) -> bytes:
        return version.prefix

    def writer_of(
        self, data: bytes, by_fingerprint: Mapping[bytes, SchemaVersion]
    ) -> tuple[SchemaVersion, int]:
        if len(data) < SINGLE_OBJECT_HEADER_BYTES:
            raise DecodeError(
                f"too short: {len(data)} bytes; single-object encoding needs at least "
                f"{SINGLE_OBJECT_HEADER_BYTES} (2-byte marker + 8-byte fingerprint)"
            )
        if data[:2] != SINGLE_OBJECT_MARKER:
            hint = (
                " (looks like the Confluent wire format: magic byte 00)"
                if data[0] == CONFLUENT_MAGIC
                else ""
            )
            raise DecodeError(
                f"bad marker {bytes(data[:2]).hex()}: expected c301 "
                f"(Avro single-object encoding){hint}"
            )
        fp = bytes(data[2:SINGLE_OBJECT_HEADER_BYTES])
        version = by_fingerprint.get(fp)
        if version is None:
            raise DecodeError(
                f"unknown writer schema fingerprint {fp.hex()}: no version in schemas/ has it"
            )
        return version, SINGLE_OBJECT_HEADER_BYTES


class SchemaRegistry(Protocol):
    """The part of a schema registry client the Confluent framing needs.

    No implementation talking to a real registry ships here (no registry server exists in
    this project); wrap e.g. confluent_kafka's ``SchemaRegistryClient`` to use one.
    """

    def register(self, subject: str, schema_json: str) -> int:
        """Register (or look up) ``schema_json`` under ``subject``; return its id."""
        ...

    def schema_json(self, schema_id: int) -> str:
        """The schema text of ``schema_id``; raises LookupError when unknown."""
        ...


def record_name_subject(version: SchemaVersion) -> str:
    """Confluent's RecordNameStrategy: the subject is the record's full name."""
    return version.record_name


class ConfluentCodec:
    """The Confluent wire format: ``00`` + 4-byte big-endian schema id + body.

    Ids are cached both ways. A registry's LookupError for an id becomes a DecodeError
    (an undecodable record); any other registry error (e.g. the registry is down) propagates,
    since retrying can fix it.
    """

    content_type = CONFLUENT_CONTENT_TYPE

    def __init__(
        self,
        registry: SchemaRegistry,
        subject_for: Callable[[SchemaVersion], str] = record_name_subject,
    ) -> None:
        self._registry = registry
        self._subject_for = subject_for
        self._prefix_by_fp: dict[bytes, bytes] = {}
        self._fp_by_id: dict[int, bytes] = {}

    def prefix(self, version: SchemaVersion) -> bytes:
        cached = self._prefix_by_fp.get(version.fingerprint)
        if cached is not None:
            return cached
        schema_id = self._registry.register(
            self._subject_for(version), json.dumps(version.definition)
        )
        if not 0 <= schema_id < 2**31:
            raise ValueError(f"schema registry returned an invalid id {schema_id}")
        prefix = bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")
        self._prefix_by_fp[version.fingerprint] = prefix
        self._fp_by_id[schema_id] = version.fingerprint
        return prefix

    def writer_of(
        self, data: bytes, by_fingerprint: Mapping[bytes, SchemaVersion]
    ) -> tuple[SchemaVersion, int]:
        if len(data) < CONFLUENT_HEADER_BYTES:
            raise DecodeError(
                f"too short: {len(data)} bytes; the Confluent wire format needs at least "
                f"{CONFLUENT_HEADER_BYTES} (magic byte + 4-byte schema id)"
            )
        if data[0] != CONFLUENT_MAGIC:
            raise DecodeError(f"bad magic byte {data[0]:02x}: expected 00 (Confluent format)")
        schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_BYTES], "big")
        fp = self._fp_by_id.get(schema_id)
        if fp is None:
            fp = self._fingerprint_of_id(schema_id)
        version = by_fingerprint.get(fp)
        if version is None:
            raise DecodeError(
                f"schema id {schema_id} (fingerprint {fp.hex()}) is not a version in schemas/"
            )
        return version, CONFLUENT_HEADER_BYTES

    def _fingerprint_of_id(self, schema_id: int) -> bytes:
        try:
            text = self._registry.schema_json(schema_id)
        except LookupError:
            raise DecodeError(f"schema id {schema_id} is unknown to the registry") from None
        try:
            canonical = avro.canonical_form(avro.parse(json.loads(text)))
        except (ValueError, SchemaParseException, UnknownType, TypeError, KeyError) as exc:
            raise DecodeError(
                f"schema id {schema_id}: the registry's schema is invalid: {exc}"
            ) from None
        fp = avro.fingerprint_of(canonical)
        self._fp_by_id[schema_id] = fp
        return fp


class InMemoryRegistry:
    """A schema registry in a dict, for tests only: same canonical schema -> same id."""

    def __init__(self) -> None:
        self._by_id: dict[int, str] = {}
        self._id_by_canonical: dict[str, int] = {}
        self.subjects: dict[str, list[int]] = {}

    def register(self, subject: str, schema_json: str) -> int:
        canonical = avro.canonical_form(avro.parse(json.loads(schema_json)))
        schema_id = self._id_by_canonical.get(canonical)
        if schema_id is None:
            schema_id = len(self._by_id) + 1
            self._by_id[schema_id] = schema_json
            self._id_by_canonical[canonical] = schema_id
        ids = self.subjects.setdefault(subject, [])
        if schema_id not in ids:
            ids.append(schema_id)
        return schema_id

    def schema_json(self, schema_id: int) -> str:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise LookupError(f"schema id {schema_id} not found") from None
