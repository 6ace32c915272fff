"""Schema versions on disk: ``schemas/<event type>/v<N>.avsc``, every released version kept.

``schemas/streams.Envelope/v<N>.avsc`` defines the envelope record ``streams.Envelope``.
An event schema is a record whose first field is ``envelope`` of type ``streams.Envelope``
(by name); its top-level attribute ``envelope_version`` (default 1) says which envelope
version it embeds, so an old event version keeps its fingerprint when the envelope evolves.
The writer schema of a version is the event record with that envelope inlined: its
canonical form, and so its fingerprint, covers the envelope too.

``load_versions`` validates every file and reports every problem at once as a SchemaError,
one ``<file>: <reason>`` line each.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro.schema import SchemaParseException, UnknownType

from streams.errors import SchemaError
from streams.serde import avro

ENVELOPE_TYPE = "streams.Envelope"
ENVELOPE_FIELD = "envelope"
SINGLE_OBJECT_MARKER = b"\xc3\x01"
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$")


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One released schema version of an event type (or of the envelope).

    ``schema`` is fastavro's parsed, self-contained writer schema (envelope inlined);
    ``fingerprint`` the 8-byte CRC-64-AVRO of its canonical form as written on the wire.
    """

    event_type: str
    version: int
    fingerprint: bytes
    schema: Any = field(repr=False)
    path: Path
    canonical: str = field(repr=False)
    definition: dict[str, Any] = field(repr=False)  # self-contained JSON form
    wire_schema: Any = field(repr=False)  # parsed, date/time logical types as integers
    prefix: bytes = field(repr=False)  # the single-object header: marker + fingerprint

    @classmethod
    def build(
        cls, event_type: str, version: int, definition: dict[str, Any], path: Path
    ) -> SchemaVersion:
        """Parse ``definition`` (self-contained) once; raises fastavro's parse errors."""
        parsed = avro.parse(definition)
        canonical = avro.canonical_form(parsed)
        fp = avro.fingerprint_of(canonical)
        return cls(
            event_type=event_type,
            version=version,
            fingerprint=fp,
            schema=parsed,
            path=path,
            canonical=canonical,
            definition=definition,
            wire_schema=avro.parse(avro.strip_time_logical_types(definition)),
            prefix=SINGLE_OBJECT_MARKER + fp,
        )

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    @property
    def header(self) -> str:
        """The ``streams-schema`` header value: ``<event type>@<fingerprint hex>``."""
        return f"{self.event_type}@{self.fingerprint.hex()}"

    @property
    def record_name(self) -> str:
        """The Avro full name of the record, e.g. ``streams.events.EmailRequested``."""
        return str(self.schema["name"])

    @property
    def label(self) -> str:
        return f"{self.event_type} v{self.version}"


def load_versions(schemas_dir: Path) -> list[SchemaVersion]:
    """Every version in ``schemas_dir`` (envelope versions first), each validated.

    Raises SchemaError with one ``<file>: <reason>`` line per problem.
    """
    if not schemas_dir.is_dir():
        raise SchemaError(f"{schemas_dir}: not a directory of schemas")
    problems: list[str] = []
    files: dict[str, dict[int, Path]] = {}
    for entry in sorted(schemas_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files[entry.name] = _version_files(entry, problems)
        elif entry.suffix == ".avsc":
            problems.append(f"{entry}: schema files belong in <event type>/v<N>.avsc")
    if ENVELOPE_TYPE not in files:
        problems.append(f"{schemas_dir / ENVELOPE_TYPE}: missing (the envelope's schemas)")
    envelopes = _load_envelopes(files.pop(ENVELOPE_TYPE, {}), problems)
    versions = list(envelopes.values())
    for event_type, by_number in files.items():
        if not _EVENT_TYPE.match(event_type):
            problems.append(
                f"{schemas_dir / event_type}: not an event type name like 'email.requested'"
            )
            continue
        for number, path in sorted(by_number.items()):
            loaded = _load_event(event_type, number, path, envelopes, problems)
            if loaded is not None:
                versions.append(loaded)
    _check_unique(versions, problems)
    if problems:
        raise SchemaError("\n".join(_one_line(p) for p in problems))
    return versions


# what str.splitlines() splits on: a name or message holding one would break the
# one-line-per-problem contract
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _one_line(problem: str) -> str:
    """``problem`` with its line breaks escaped (e.g. a field name holding ``\\r``)."""
    if not any(ch in _LINE_BREAKS for ch in problem):
        return problem
    return "".join(repr(ch)[1:-1] if ch in _LINE_BREAKS else ch for ch in problem)


def _version_files(directory: Path, problems: list[str]) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        match = _VERSION_FILE.match(path.name)
        if not match or not path.is_file():
            problems.append(f"{path}: not a schema version file (expected v<N>.avsc, N >= 1)")
            continue
        found[int(match.group(1))] = path
    if not found:
        problems.append(f"{directory}: no schema versions (expected v1.avsc, ...)")
    missing = sorted(set(range(1, max(found, default=0) + 1)) - set(found))
    if missing:
        names = ", ".join(f"v{n}.avsc" for n in missing)
        problems.append(f"{directory}: missing {names}: released versions are kept forever")
    return found


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
        return None
    except UnicodeDecodeError:
        problems.append(f"{path}: not UTF-8 text")
        return None
    except json.JSONDecodeError as exc:
        problems.append(f"{path}: not valid JSON: {exc}")
        return None
    if not isinstance(data, dict) or data.get("type") != "record":
        problems.append(f"{path}: must be an Avro record schema (a JSON object, type 'record')")
        return None
    return data


def _build(
    event_type: str, number: int, definition: dict[str, Any], path: Path, problems: list[str]
) -> SchemaVersion | None:
    lint = avro.lint(definition, require_docs=True)
    if lint:
        problems.extend(f"{path}: {p}" for p in lint)
        return None
    try:
        version = SchemaVersion.build(event_type, number, definition, path)
    except (SchemaParseException, UnknownType, ValueError, TypeError, KeyError) as exc:
        problems.append(f"{path}: not a valid Avro schema: {type(exc).__name__}: {exc}")
        return None
    problem = avro.no_value_problem(version.schema)
    if problem:
        problems.append(f"{path}: not a usable Avro schema: {problem}")
        return None
    return version


def _load_envelopes(by_number: dict[int, Path], problems: list[str]) -> dict[int, SchemaVersion]:
    out: dict[int, SchemaVersion] = {}
    for number, path in sorted(by_number.items()):
        data = _read_json(path, problems)
        if data is None:
            continue
        namespace = data.get("namespace")
        name = str(data.get("name", ""))
        full = name if "." in name or not namespace else f"{namespace}.{name}"
        if full != ENVELOPE_TYPE:
            problems.append(f"{path}: the envelope record must be named {ENVELOPE_TYPE!r}")
            continue
        version = _build(ENVELOPE_TYPE, number, data, path, problems)
        if version is not None:
            out[number] = version
    return out


def _load_event(
    event_type: str,
    number: int,
    path: Path,
    envelopes: dict[int, SchemaVersion],
    problems: list[str],
) -> SchemaVersion | None:
    data = _read_json(path, problems)
    if data is None:
        return None
    env_number = data.get("envelope_version", 1)
    if isinstance(env_number, bool) or not isinstance(env_number, int):
        problems.append(f"{path}: envelope_version must be an integer")
        return None
    envelope = envelopes.get(env_number)
    if envelope is None:
        problems.append(f"{path}: envelope_version {env_number}: no such envelope version")
        return None
    fields = data.get("fields")
    first = fields[0] if isinstance(fields, list) and fields else None
    if (
        not isinstance(first, dict)
        or first.get("name") != ENVELOPE_FIELD
        or first.get("type") != ENVELOPE_TYPE
    ):
        problems.append(
            f"{path}: the first field must be "
            f'{{"name": "{ENVELOPE_FIELD}", "type": "{ENVELOPE_TYPE}"}}'
        )
        return None
    definition = copy.deepcopy(data)
    definition["fields"][0]["type"] = copy.deepcopy(envelope.definition)
    return _build(event_type, number, definition, path, problems)


def _check_unique(versions: list[SchemaVersion], problems: list[str]) -> None:
    by_fp: dict[bytes, SchemaVersion] = {}
    by_record: dict[str, str] = {}
    for v in versions:
        other = by_fp.setdefault(v.fingerprint, v)
        if other is not v:
            problems.append(
                f"{v.path}: same canonical form (fingerprint {v.fingerprint_hex}) as "
                f"{other.path} (docs, defaults and aliases are not part of it): a new version "
                "must change the written schema"
            )
        owner = by_record.setdefault(v.record_name, v.event_type)
        if owner != v.event_type:
            problems.append(f"{v.path}: record name {v.record_name!r} is already used by {owner!r}")
