"""The pure parts of publishing: trace context, headers, partition key, size check, results.

No confluent_kafka here: everything is plain data so it is unit-tested without a broker.
The publisher (``streams.publish.publisher``) runs these on every event, so they are written
for speed: constant header names and values are encoded once per event type.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from streams.core import headers as h
from streams.errors import EventTooLarge, InvalidPayload

RECORD_OVERHEAD_BYTES = 512
"""Room kept below ``max_message_bytes`` for Kafka's record and batch framing."""

MAX_TRACESTATE_CHARS = 512  # W3C trace-context: "at most 512 characters" is the safe limit

RESERVED_HEADERS = frozenset(h.EVENT_HEADERS)
"""Header names the publisher sets itself; callers may not set them (nor ``streams-*``)."""

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_TRACESTATE_MEMBER = re.compile(r"^[a-z0-9_\-*/@]{1,256}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}$")
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16

# --- W3C trace context ------------------------------------------------------------------


class _RandomPool:
    """``os.urandom`` bytes handed out from a 4 KiB buffer: one system call per ~100 ids.

    Thread-safe; emptied in a forked child so parent and child never share bytes.
    """

    SIZE_BYTES = 4096

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            end = self._pos + n
            if end > len(self._buffer):
                self._buffer = os.urandom(max(n, self.SIZE_BYTES))
                self._pos, end = 0, n
            out = self._buffer[self._pos : end]
            self._pos = end
        return out


_random = _RandomPool()


def new_traceparent() -> str:
    """A fresh W3C ``traceparent`` (version 00, random trace and span ids, sampled)."""
    while True:
        raw = _random.take(24).hex()
        trace_id, span_id = raw[:32], raw[32:]
        if trace_id != _ZERO_TRACE_ID and span_id != _ZERO_SPAN_ID:
            return f"00-{trace_id}-{span_id}-01"


def new_event_id() -> str:
    """A random (version 4) UUID string, like ``str(uuid.uuid4())`` but faster."""
    raw = bytearray(_random.take(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))  # byte 6 of a UUID4
_VARIANT_1 = bytes(b & 0x3F | 0x80 for b in range(256))  # byte 8 of a UUID4


def new_event_ids(n: int) -> list[str]:
    """``n`` fresh ``new_event_id()`` strings at once: one read of random bytes, the
    version and variant bits set on all of them in two ``translate`` calls."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_1)
    x = raw.hex()
    return [
        f"{x[i : i + 8]}-{x[i + 8 : i + 12]}-{x[i + 12 : i + 16]}-{x[i + 16 : i + 20]}-"
        f"{x[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def new_traceparents(n: int) -> list[bytes]:
    """``n`` fresh ``new_traceparent()`` values, already UTF-8 (the header value)."""
    x = os.urandom(24 * n).hex()
    out = [f"00-{x[i : i + 32]}-{x[i + 32 : i + 48]}-01".encode() for i in range(0, 48 * n, 48)]
    if _ZERO_SPAN_ID in x:  # an all-zero id is invalid: redraw those (about never)
        zero_trace, zero_span = f"-{_ZERO_TRACE_ID}-".encode(), f"-{_ZERO_SPAN_ID}-".encode()
        for i, tp in enumerate(out):
            if zero_trace in tp or zero_span in tp:
                out[i] = new_traceparent().encode()
    return out


def traceparent_error(value: str) -> str | None:
    """Why ``value`` is not a valid W3C ``traceparent``, or None when it is valid."""
    match = _TRACEPARENT.match(value)
    if match is None:
        return (
            "must look like '00-<32 lowercase hex trace id>-<16 lowercase hex span id>-"
            "<2 hex flags>'"
        )
    version, trace_id, span_id, _flags, rest = match.groups()
    if version == "ff":
        return "version 'ff' is invalid"
    if version == "00" and rest is not None:
        return "version 00 has exactly four dash-separated fields"
    if trace_id == _ZERO_TRACE_ID:
        return "the trace id must not be all zeros"
    if span_id == _ZERO_SPAN_ID:
        return "the parent (span) id must not be all zeros"
    return None


def tracestate_error(value: str) -> str | None:
    """Why ``value`` is not a valid W3C ``tracestate``, or None when it is valid."""
    if len(value) > MAX_TRACESTATE_CHARS:
        return f"longer than {MAX_TRACESTATE_CHARS} characters ({len(value)})"
    members = [m.strip() for m in value.split(",")]
    if len(members) > 32:
        return f"more than 32 list members ({len(members)})"
    for member in members:
        if member and _TRACESTATE_MEMBER.match(member) is None:
            return f"member {member[:40]!r} is not 'key=value' in the W3C character set"
    return None


# --- headers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderTemplate:
    """The headers shared by every event of one type, encoded once."""

    event_type: bytes
    schema: bytes
    size_bytes: int  # names + values of the constant headers, plus the variable names

    @classmethod
    def for_event_type(cls, event_type: str, schema_header: str) -> HeaderTemplate:
        et = event_type.encode()
        schema = schema_header.encode()
        fixed = (
            len(h.EVENT_TYPE)
            + len(et)
            + len(h.SCHEMA)
            + len(schema)
            + len(h.CONTENT_TYPE)
            + len(_AVRO)
            + len(h.EVENT_ID)
            + len(h.TRACEPARENT)
        )
        return cls(et, schema, fixed)


_AVRO = h.AVRO_CONTENT_TYPE.encode()
HeaderList = list[tuple[str, bytes]]


def build_headers(
    template: HeaderTemplate,
    event_type: str,
    event_id: str,
    *,
    trace_parent: str | None = None,
    trace_state: str | None = None,
    extra: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None,
) -> tuple[HeaderList, int]:
    """The Kafka headers of one event (ours first, then the caller's ``extra`` headers) and
    their size in bytes (names + values, as ``headers_size_bytes``).

    Raises InvalidPayload (field ``headers.<name>``) for a malformed trace context, an extra
    header that would override ours (``streams-*`` or an event header), or a value that is
    neither str nor bytes.
    """
    if trace_parent is None:
        trace_parent = new_traceparent()
    else:
        reason = traceparent_error(trace_parent)
        if reason is not None:
            raise InvalidPayload(event_type, [(f"headers.{h.TRACEPARENT}", reason)])
    eid = event_id.encode()
    tp = trace_parent.encode()
    out: HeaderList = [
        (h.EVENT_ID, eid),
        (h.EVENT_TYPE, template.event_type),
        (h.SCHEMA, template.schema),
        (h.CONTENT_TYPE, _AVRO),
        (h.TRACEPARENT, tp),
    ]
    size = template.size_bytes + len(eid) + len(tp)
    if trace_state is not None:
        reason = tracestate_error(trace_state)
        if reason is not None:
            raise InvalidPayload(event_type, [(f"headers.{h.TRACESTATE}", reason)])
        ts = trace_state.encode()
        out.append((h.TRACESTATE, ts))
        size += len(h.TRACESTATE) + len(ts)
    if extra:
        more = _extra_headers(event_type, extra)
        out.extend(more)
        size += headers_size_bytes(more)
    return out, size


def _extra_headers(
    event_type: str, extra: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]
) -> HeaderList:
    items = extra.items() if isinstance(extra, Mapping) else extra
    problems: list[tuple[str, str]] = []
    out: HeaderList = []
    for name, value in items:
        if not isinstance(name, str) or not name:
            problems.append((f"headers.{name!r}", "a header name must be a non-empty string"))
        elif name in RESERVED_HEADERS or name.startswith("streams-"):
            problems.append((f"headers.{name}", "reserved: set by the publisher"))
        elif isinstance(value, str):
            out.append((name, value.encode()))
        elif isinstance(value, bytes):
            out.append((name, value))
        else:
            reason = f"value must be str or bytes, got {type(value).__name__}"
            problems.append((f"headers.{name}", reason))
    if problems:
        raise InvalidPayload(event_type, problems)
    return out


def headers_size_bytes(headers: HeaderList) -> int:
    """Bytes the header names and values take (without Kafka's varint framing)."""
    return sum(len(name) + len(value) for name, value in headers)


# --- partition key ----------------------------------------------------------------------


def partition_key(
    event_type: str, key_field: str, value: Any, explicit: str | bytes | None
) -> bytes:
    """The record key: the family's key field of the validated event, as UTF-8.

    ``value`` is the event's ``key_field`` attribute (str, int or UUID). Raises
    InvalidPayload naming the key field when it is missing or empty, of another type, or
    differs from an explicit ``key``.
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | uuid.UUID) and not isinstance(value, bool):
        text = str(value)
    elif value is None:
        raise InvalidPayload(event_type, [(key_field, "required: it is the partition key")])
    else:
        reason = f"a partition key must be a string or integer, got {type(value).__name__}"
        raise InvalidPayload(event_type, [(key_field, reason)])
    if not text:
        reason = "must not be empty: it is the partition key"
        raise InvalidPayload(event_type, [(key_field, reason)])
    key = text.encode()
    if explicit is not None:
        given = explicit.encode() if isinstance(explicit, str) else explicit
        if given != key:
            reason = f"explicit key {_show(given)} differs from the payload's {key_field} {text!r}"
            raise InvalidPayload(event_type, [(key_field, reason)])
    return key


def _show(raw: bytes) -> str:
    try:
        return repr(raw.decode())
    except UnicodeDecodeError:
        return repr(raw)


# --- size -------------------------------------------------------------------------------


def check_size(
    event_type: str,
    *,
    value_bytes: int,
    key_bytes: int,
    headers_bytes: int,
    max_message_bytes: int,
    overhead_bytes: int = RECORD_OVERHEAD_BYTES,
) -> None:
    """Raise EventTooLarge (with every size) unless the record fits ``max_message_bytes``."""
    total = value_bytes + key_bytes + headers_bytes
    limit = max_message_bytes - overhead_bytes
    if total > limit:
        raise EventTooLarge(
            f"{event_type} event is {total} bytes (value {value_bytes}, key {key_bytes}, "
            f"headers {headers_bytes}); the limit is {limit} bytes "
            f"(max_message_bytes {max_message_bytes} less {overhead_bytes} for record framing)"
        )


# --- results ----------------------------------------------------------------------------


class PublishResult(NamedTuple):
    """Where the broker stored an event: acknowledged with acks=all.

    A NamedTuple (immutable, cheap to build by the ten thousand)."""

    topic: str
    partition: int
    offset: int
    event_id: str
    timestamp_ms: int
