"""``SchemaStore``: every schema version loaded once; events to bytes and back.

Encoding writes the event with its type's latest version. Decoding finds the writer
version from the framing (fingerprint or registry id) among ALL versions and reads the body
into the latest version of that event type (Avro schema resolution), so a worker reads what
older producers wrote. Schemas are parsed once; the hot path is one dict lookup and one
fastavro call each way.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from pydantic import ValidationError

from streams.errors import DecodeError, EventValidationError, InvalidPayload, UnknownEventType
from streams.events import EVENT_MODELS, Event, validation_errors
from streams.serde import avro
from streams.serde.codec import Codec, SingleObjectCodec
from streams.serde.locate import Leaves, failing_field, leaf_fields
from streams.serde.versions import ENVELOPE_TYPE, SchemaVersion, load_versions

_MAX_REASON_CHARS = 300


class InvalidEvent(EventValidationError):
    """A record decoded but fails its event model; ``errors`` lists (field path, reason)."""

    def __init__(self, event_type: str, errors: list[tuple[str, str]]) -> None:
        detail = "; ".join(f"{path}: {reason}" for path, reason in errors)
        super().__init__(f"invalid {event_type} event: {detail}")
        self.event_type = event_type
        self.errors = errors


class SchemaStore:
    """All versions of all event types, indexed by type and by fingerprint."""

    def __init__(self, versions: Iterable[SchemaVersion], codec: Codec | None = None) -> None:
        self._all = tuple(versions)
        self._codec: Codec = codec or SingleObjectCodec()
        by_type: dict[str, list[SchemaVersion]] = {}
        for v in self._all:
            by_type.setdefault(v.event_type, []).append(v)
        self._by_type = {t: tuple(sorted(vs, key=lambda v: v.version)) for t, vs in by_type.items()}
        self._latest = {t: vs[-1] for t, vs in self._by_type.items()}
        events = [v for v in self._all if v.event_type != ENVELOPE_TYPE]
        self._by_fingerprint = {v.fingerprint: v for v in events}
        # the reader schema per writer: None when the writer is the latest version
        self._reader_of: dict[bytes, Any] = {
            v.fingerprint: None
            if self._latest[v.event_type] is v
            else self._latest[v.event_type].wire_schema
            for v in events
        }
        # fastavro hands out the reader schema's default objects themselves for fields the
        # writer lacks: copy records read through a reader with mutable (map/array) defaults
        self._copy_after_read = {
            fp
            for fp, reader in self._reader_of.items()
            if reader is not None and _has_mutable_default(reader)
        }
        self.event_types: frozenset[str] = frozenset(v.event_type for v in events)
        self._leaves_of: dict[bytes, Leaves] = {}  # filled when a body of the writer fails

    @classmethod
    def load(cls, schemas_dir: Path, *, codec: Codec | None = None) -> SchemaStore:
        """Load and validate every file; raises SchemaError(one ``file: reason`` per line)."""
        return cls(load_versions(schemas_dir), codec)

    def with_codec(self, codec: Codec) -> SchemaStore:
        """The same versions framed with another codec (e.g. ``ConfluentCodec``)."""
        return SchemaStore(self._all, codec)

    @property
    def codec(self) -> Codec:
        return self._codec

    # --- lookups ---------------------------------------------------------------------

    def latest(self, event_type: str) -> SchemaVersion:
        """The newest version of ``event_type``; raises UnknownEventType naming the known."""
        try:
            return self._latest[event_type]
        except (KeyError, TypeError):
            raise self._unknown(event_type) from None

    def versions(self, event_type: str) -> tuple[SchemaVersion, ...]:
        """Every version of ``event_type`` (or of ``streams.Envelope``), oldest first."""
        try:
            return self._by_type[event_type]
        except (KeyError, TypeError):
            raise self._unknown(event_type) from None

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The event schema version with this 8-byte fingerprint, if any."""
        return self._by_fingerprint.get(bytes(fingerprint))

    def by_header(self, value: str) -> SchemaVersion | None:
        """The version named by a ``streams-schema`` header (``type@hex``), if known."""
        event_type, _, hex_fp = value.partition("@")
        try:
            version = self._by_fingerprint.get(bytes.fromhex(hex_fp))
        except ValueError:
            return None
        return version if version is not None and version.event_type == event_type else None

    @property
    def all_versions(self) -> tuple[SchemaVersion, ...]:
        """Every version, the envelope's included, ordered by type then version."""
        return tuple(v for t in sorted(self._by_type) for v in self._by_type[t])

    def _unknown(self, event_type: object) -> UnknownEventType:
        known = ", ".join(sorted(self.event_types))
        return UnknownEventType(f"unknown event type {event_type!r}; known: {known}")

    # --- encoding --------------------------------------------------------------------

    def encode(self, event: Event) -> bytes:
        """The event framed by the codec and encoded with its type's latest version.

        Raises UnknownEventType, or InvalidPayload if a value cannot be written (only for a
        model built without validation, e.g. ``model_construct``).
        """
        version = self.latest(event.EVENT_TYPE)
        record = dict(event.__dict__)
        record["envelope"] = event.envelope.__dict__
        out = BytesIO()
        out.write(self._codec.prefix(version))
        try:
            schemaless_writer(out, version.wire_schema, record)
        except (ValueError, TypeError, OverflowError, KeyError, AttributeError) as exc:
            reason = f"cannot encode with {version.label}: {type(exc).__name__}: {exc}"
            raise InvalidPayload(version.event_type, [("<event>", _bounded(reason))]) from None
        return out.getvalue()

    # --- decoding --------------------------------------------------------------------

    def decode(self, data: bytes) -> tuple[SchemaVersion, dict[str, Any]]:
        """The writer's version and the record, read into the latest version's fields.

        Raises DecodeError saying why: too short, bad marker, unknown fingerprint (or
        schema id), malformed body (naming the first field that cannot be read, and the
        byte it starts at), trailing bytes.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        writer, offset = self._codec.writer_of(data, self._by_fingerprint)
        stream = BytesIO(data)
        stream.seek(offset)
        try:
            record = schemaless_reader(
                stream, writer.wire_schema, self._reader_of[writer.fingerprint]
            )
        except Exception as exc:  # fastavro raises many types on hostile bytes
            where = failing_field(self._leaves(writer), data, offset)
            reason = where or f"{type(exc).__name__}: {exc}"
            raise DecodeError(_bounded(f"malformed {writer.label} body: {reason}")) from None
        if writer.fingerprint in self._copy_after_read:
            record = copy.deepcopy(record)
        trailing = len(data) - stream.tell()
        if trailing:
            raise DecodeError(f"{trailing} trailing bytes after the {writer.label} body")
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.label} body is not a record")
        return writer, record

    def _leaves(self, writer: SchemaVersion) -> Leaves:
        leaves = self._leaves_of.get(writer.fingerprint)
        if leaves is None:
            leaves = self._leaves_of[writer.fingerprint] = leaf_fields(writer.wire_schema)
        return leaves

    def decode_event(self, data: bytes) -> Event:
        """The validated event; raises DecodeError, or InvalidEvent (an EventValidationError)
        with every ``(field path, reason)`` when the content fails the event model."""
        writer, record = self.decode(data)
        model = EVENT_MODELS.get(writer.event_type)
        if model is None:
            raise DecodeError(f"no event model for {writer.event_type!r}")
        try:
            return model.model_validate(record)
        except ValidationError as exc:
            raise InvalidEvent(writer.event_type, validation_errors(exc)) from None


def _has_mutable_default(schema: Any) -> bool:
    return any(
        isinstance(field.get("default"), dict | list)
        for node in avro.walk(schema)
        if node.get("type") in ("record", "error")
        for field in node.get("fields", [])
    )


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."
