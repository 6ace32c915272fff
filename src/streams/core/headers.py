"""The header contract: event metadata and failure metadata as UTF-8 Kafka headers.

Every value is a UTF-8 string so any console (kcat, AKHQ, Kafka UI) shows it as text.
Failure headers are *replaced*, never appended, on each attempt, so a record's headers do
not grow across the retry ladder; free text is bounded and scrubbed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streams.core.scrub import scrub as scrub  # re-exported: the header contract scrubs

# --- names ------------------------------------------------------------------------------

EVENT_ID = "streams-event-id"
EVENT_TYPE = "streams-event-type"
SCHEMA = "streams-schema"  # "<event type>@<fingerprint hex>"
CONTENT_TYPE = "content-type"  # "application/vnd.streams+avro" (single-object encoding)
TRACEPARENT = "traceparent"  # W3C trace context
TRACESTATE = "tracestate"
# the priority lane of an event published to a lane other than its family's default one
# (topics.yaml ``priorities:``); kept through retry tiers, the DLQ and redrive (not a
# failure header), so a redriven event goes back to its lane's topic
LANE = "streams-lane"

ATTEMPT = "streams-attempt"  # the attempt the record will run as (1 = first run)
DEFERRALS = "streams-deferrals"  # rate-limit / circuit deferrals so far (no attempt used)
FIRST_DEFERRED_AT_MS = "streams-first-deferred-at-ms"
# "1": the record's rate-limit tokens were taken when it was deferred (not charged again)
RATE_RESERVED = "streams-rate-reserved"
DUE_AT_MS = "streams-due-at-ms"
ORIGINAL_TOPIC = "streams-original-topic"
ORIGINAL_PARTITION = "streams-original-partition"
ORIGINAL_OFFSET = "streams-original-offset"
ORIGINAL_TIMESTAMP_MS = "streams-original-timestamp-ms"
FIRST_FAILURE_AT_MS = "streams-first-failure-at-ms"
FAILED_AT_MS = "streams-failed-at-ms"
ERROR_CLASS = "streams-error-class"
ERROR_MESSAGE = "streams-error-message"
ERROR_FINGERPRINT = "streams-error-fingerprint"
DLQ_REASON = "streams-dlq-reason"

EVENT_HEADERS = (EVENT_ID, EVENT_TYPE, SCHEMA, CONTENT_TYPE, TRACEPARENT, TRACESTATE)
FAILURE_HEADERS = (
    ATTEMPT,
    DEFERRALS,
    FIRST_DEFERRED_AT_MS,
    RATE_RESERVED,
    DUE_AT_MS,
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP_MS,
    FIRST_FAILURE_AT_MS,
    FAILED_AT_MS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    ERROR_FINGERPRINT,
    DLQ_REASON,
)
DLQ_REASONS = (
    "exhausted",
    "permanent",
    "undecodable",
    "invalid",
    "rejected",
    "expired",
    "unroutable",
    "at_most_once",
)

AVRO_CONTENT_TYPE = "application/vnd.streams+avro"

MAX_ERROR_MESSAGE_BYTES = 512
MAX_ERROR_CLASS_BYTES = 128
MAX_HEADER_VALUE_BYTES = 1024
MAX_HEADER_NAME_BYTES = 256
MAX_FOREIGN_HEADERS = 32
MAX_FOREIGN_HEADER_BYTES = 4096  # names + values of the foreign and unknown streams-* kept

# --- encoding ---------------------------------------------------------------------------

RawHeaders = Iterable[tuple[str | bytes, bytes | str | None]]

_KNOWN = frozenset(EVENT_HEADERS) | frozenset(FAILURE_HEADERS) | {LANE}
# a value longer than this cannot survive truncate_utf8 whole: decoding a longer prefix
# changes nothing (a raw byte never becomes fewer than one UTF-8 byte), so huge values
# are cut before decoding
_VALUE_PREFIX_BYTES = MAX_HEADER_VALUE_BYTES + 4


def encode(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """Kafka header list (name, UTF-8 bytes), in a stable order. Never raises on strings
    (a lone surrogate becomes '?')."""
    return [(name, value.encode("utf-8", errors="replace")) for name, value in headers.items()]


def decode(raw: RawHeaders | None) -> dict[str, str]:
    """Header dict from a Kafka header list. Never raises.

    Undecodable bytes (in names or values) become U+FFFD; a repeated name keeps its last
    value; ``None`` values become ''; an item that is not a (name, value) pair, and a name
    longer than MAX_HEADER_NAME_BYTES, are skipped. Foreign headers beyond
    MAX_FOREIGN_HEADERS, as many again unknown ``streams-*`` ones (e.g. the replay copies),
    and any of these past MAX_FOREIGN_HEADER_BYTES in all, are dropped: a hostile record
    cannot grow what we copy to the retry tiers and the DLQ past the family's header
    reserve (U+FFFD takes 3 bytes where the raw byte took 1).
    """
    out: dict[str, str] = {}
    foreign = unknown_ours = foreign_bytes = 0
    try:
        items = iter(raw or ())
    except TypeError:
        return out
    for item in items:
        try:
            raw_name, value = item
        except (TypeError, ValueError):
            continue
        kind = type(raw_name)
        cacheable = kind is str or kind is bytes
        name = _NAMES.get(raw_name) if cacheable else None
        if name is None:
            name = _name(raw_name)
            if name is None:
                continue
            if cacheable and len(_NAMES) < _MAX_NAMES:
                _NAMES[raw_name] = name
        if type(value) is bytes and len(value) <= _SHORT_VALUE_BYTES:
            text = value.decode("utf-8", errors="replace")  # never past the limit
        else:
            text = truncate_utf8(_value(value), MAX_HEADER_VALUE_BYTES)
        if name not in _KNOWN:
            if name not in out:
                if name.startswith("streams-"):
                    unknown_ours += 1
                    if unknown_ours > MAX_FOREIGN_HEADERS:
                        continue
                else:
                    foreign += 1
                    if foreign > MAX_FOREIGN_HEADERS:
                        continue
                size = len(name.encode("utf-8")) + len(text.encode("utf-8"))
            else:  # a repeated name: only its value changes
                size = len(text.encode("utf-8")) - len(out[name].encode("utf-8"))
            if foreign_bytes + size > MAX_FOREIGN_HEADER_BYTES:
                continue
            foreign_bytes += size
        out[name] = text
    return out


# the hot path: header names repeat (ours on every record), so their checked text is kept,
# by the raw name: bytes (librdkafka) or str (aiokafka decodes names itself, ~5 us a record
# to re-check); bounded: names beyond the first few thousand distinct ones are checked each
# time. A value this short cannot outgrow MAX_HEADER_VALUE_BYTES even if every byte became
# U+FFFD
_NAMES: dict[bytes | str, str] = {}
_MAX_NAMES = 4096
_SHORT_VALUE_BYTES = MAX_HEADER_VALUE_BYTES // 3


def _name(raw: object) -> str | None:
    """A header name as well-formed text; None when too long or not a name at all."""
    if isinstance(raw, bytes | bytearray | memoryview):
        if len(raw) > MAX_HEADER_NAME_BYTES:
            return None
        name = bytes(raw).decode("utf-8", errors="replace")
        return name if len(name.encode("utf-8")) <= MAX_HEADER_NAME_BYTES else None
    if not isinstance(raw, str) or len(raw) > MAX_HEADER_NAME_BYTES:
        return None
    data = raw.encode("utf-8", errors="replace")  # a lone surrogate becomes '?'
    return data.decode("utf-8") if len(data) <= MAX_HEADER_NAME_BYTES else None


def _value(raw: object) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw[:_VALUE_PREFIX_BYTES]).decode("utf-8", errors="replace")
    if isinstance(raw, str):
        return raw
    return repr(raw)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, never inside a character; a lone
    surrogate (not encodable) becomes '?'."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = text.encode("utf-8", errors="replace")
        text = data.decode("utf-8")
    if len(data) <= max_bytes:
        return text
    cut = data[: max(0, max_bytes - 3)].decode("utf-8", errors="ignore")
    return cut + "..."


# --- scrubbing and fingerprints ---------------------------------------------------------

_NUMBERS = re.compile(r"\d+")


def error_fingerprint(error_class: str, message: str) -> str:
    """A 16-hex-digit id grouping errors that differ only in numbers (ids, ports, counts)."""
    shape = _NUMBERS.sub("#", scrub(message))[:200]
    return hashlib.sha256(f"{error_class}\n{shape}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Failure:
    """What went wrong, as it will be written to the headers."""

    error_class: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        return cls(name, str(exc) or name)

    def headers(self) -> dict[str, str]:
        cls = truncate_utf8(self.error_class, MAX_ERROR_CLASS_BYTES)
        msg = truncate_utf8(scrub(self.message), MAX_ERROR_MESSAGE_BYTES)
        return {
            ERROR_CLASS: cls,
            ERROR_MESSAGE: msg,
            ERROR_FINGERPRINT: error_fingerprint(self.error_class, self.message),
        }


@dataclass(frozen=True)
class Origin:
    """Where the event was first consumed from (set once, kept across tiers)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    def headers(self) -> dict[str, str]:
        return {
            ORIGINAL_TOPIC: self.topic,
            ORIGINAL_PARTITION: str(self.partition),
            ORIGINAL_OFFSET: str(self.offset),
            ORIGINAL_TIMESTAMP_MS: str(self.timestamp_ms),
        }


_INT64 = re.compile(r"-?[0-9]{1,19}")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def int_header(headers: Mapping[str, str], name: str, default: int) -> int:
    """An integer header, or ``default`` when absent or malformed (never raises).

    Well-formed is what we write: optional '-', ASCII digits, within signed 64 bits (the
    range of the Avro longs and database columns these values end up in); not ``" 7"``,
    ``"1_000"``, other scripts' digits, or a thousand-digit number.
    """
    value = headers.get(name)
    if value is None or not _INT64.fullmatch(value):
        return default
    number = int(value)
    return number if _INT64_MIN <= number <= _INT64_MAX else default


def lane_of(headers: Mapping[str, str]) -> str | None:
    """The event's priority lane (LANE), or None when it has none (the default lane)."""
    return headers.get(LANE) or None


def attempt_of(headers: Mapping[str, str]) -> int:
    """The attempt this record runs as (1 when the header is absent or malformed)."""
    return max(1, int_header(headers, ATTEMPT, 1))
