"""The DLQ's pure record model: header parsing, values, positions, selections, statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.catalog import load_catalog
from streams.core import headers as h
from streams.dlq.records import (
    DlqRecord,
    PartitionRange,
    describe_value,
    dlq_topic_for,
    iso_ms,
    latest,
    parse_position,
    summarize,
    with_reason,
)
from streams.errors import CatalogError, DlqError
from streams.events import EXAMPLE_PAYLOADS, build_event
from streams.serde import SchemaStore
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STORE = SchemaStore.load(ROOT / "schemas")
TOPIC = "t.webhook.dlq"


class Message:
    """The fields of a consumed confluent-kafka message, as plain values."""

    def __init__(
        self,
        *,
        partition: int = 0,
        offset: int = 0,
        timestamp: tuple[int, int] = (1, 1_700_000_000_000),
        key: bytes | None = b"k",
        value: bytes | None = b"v",
        headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        self._partition, self._offset, self._timestamp = partition, offset, timestamp
        self._key, self._value, self._headers = key, value, headers

    def topic(self) -> str | None:
        return TOPIC

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def headers(
        self,
    ) -> dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None:
        return self._headers


def record(
    partition: int = 0,
    offset: int = 0,
    *,
    reason: str = "exhausted",
    failed_at_ms: int | None = 1_700_000_000_000,
    error_class: str = "streams.jobs.webhook.Timeout",
    error_message: str = "timed out after 10s",
    event_type: str | None = "webhook.requested",
    timestamp_ms: int | None = None,
) -> DlqRecord:
    headers = {h.DLQ_REASON: reason, h.ERROR_CLASS: error_class, h.ERROR_MESSAGE: error_message}
    if failed_at_ms is not None:
        headers[h.FAILED_AT_MS] = str(failed_at_ms)
    if event_type is not None:
        headers[h.EVENT_TYPE] = event_type
    return DlqRecord(TOPIC, partition, offset, timestamp_ms, b"k", b"v", headers)


# --- times and positions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, None),
        (-5, None),
        (None, None),
        (1, "1970-01-01T00:00:00.001Z"),
        (1_738_324_800_000, "2025-01-31T12:00:00.000Z"),
        (10**20, None),  # beyond datetime's range: no time, no error
    ],
)
def test_iso_ms_formats_utc_milliseconds_or_none(ms: int | None, text: str | None) -> None:
    assert iso_ms(ms) == text


@pytest.mark.parametrize(("text", "position"), [("3:42", (3, 42)), (" 0:0 ", (0, 0))])
def test_parse_position_reads_partition_and_offset(text: str, position: tuple[int, int]) -> None:
    assert parse_position(text) == position


@pytest.mark.parametrize("text", ["3", "3:", ":4", "a:1", "1:-2", "1:2:3", ""])
def test_parse_position_names_the_expected_form(text: str) -> None:
    with pytest.raises(DlqError, match=r"expected PARTITION:OFFSET"):
        parse_position(text)


def test_dlq_topic_for_uses_the_prefix_and_names_unknown_families() -> None:
    catalog = load_catalog(ROOT / "topics.yaml")
    settings = Settings(topic_prefix="t.")
    assert dlq_topic_for(settings, catalog, "webhook") == "t.webhook.dlq"
    with pytest.raises(CatalogError):
        dlq_topic_for(settings, catalog, "no-such-family")


def test_partition_range_counts_stored_offsets() -> None:
    assert PartitionRange(0, 5, 9).count == 4
    assert PartitionRange(0, 9, 9).count == 0
    assert PartitionRange(0, 9, 3).count == 0  # never negative


# --- a record from a message ----------------------------------------------------------------


def test_from_message_decodes_the_failure_headers() -> None:
    message = Message(
        partition=2,
        offset=17,
        headers=[
            (h.DLQ_REASON, b"permanent"),
            (h.ERROR_CLASS, b"streams.errors.Permanent"),
            (h.ERROR_MESSAGE, "bad address 42"),
            (h.ATTEMPT, b"3"),
            (h.ORIGINAL_PARTITION, b"1"),
            (h.ORIGINAL_OFFSET, b"not a number"),
            (h.FIRST_FAILURE_AT_MS, b"1700000000000"),
            (h.EVENT_ID, b"e-1"),
        ],
    )
    rec = DlqRecord.from_message(message)
    assert (rec.topic, rec.partition, rec.offset, rec.position) == (TOPIC, 2, 17, "2:17")
    assert rec.timestamp_ms == 1_700_000_000_000
    assert rec.reason == "permanent"
    assert rec.error_class == "streams.errors.Permanent"
    assert rec.attempt == 3
    assert rec.original_partition == 1
    assert rec.original_offset is None  # unparsable: absent, not an error
    assert rec.first_failure_at_ms == 1_700_000_000_000
    assert rec.failed_at_ms == 1_700_000_000_000  # no failed-at header: the record time
    assert rec.event_id == "e-1"
    # no fingerprint header: computed from class and message (numbers ignored)
    assert rec.fingerprint == h.error_fingerprint("streams.errors.Permanent", "bad address 42")
    assert rec.fingerprint == h.error_fingerprint("streams.errors.Permanent", "bad address 7")


def test_from_message_takes_dict_headers_and_no_timestamp() -> None:
    rec = DlqRecord.from_message(Message(timestamp=(0, -1), headers={h.DLQ_REASON: "invalid"}))
    assert rec.reason == "invalid"
    assert rec.timestamp_ms is None
    assert rec.failed_at_ms is None


def test_a_record_without_headers_has_no_reason() -> None:
    rec = DlqRecord.from_message(Message(headers=None))
    assert rec.headers == {}
    assert rec.reason == "(none)"
    assert rec.attempt is None


def test_the_workers_fingerprint_header_wins() -> None:
    rec = DlqRecord(TOPIC, 0, 0, None, None, None, {h.ERROR_FINGERPRINT: "00ff00ff00ff00ff"})
    assert rec.fingerprint == "00ff00ff00ff00ff"


def test_summary_is_json_ready_and_shows_a_binary_key_as_hex() -> None:
    rec = DlqRecord(
        TOPIC,
        1,
        4,
        1_700_000_000_000,
        b"\xff\x00",
        b"v",
        {h.DLQ_REASON: "exhausted", h.ORIGINAL_TIMESTAMP_MS: "1"},
    )
    summary = rec.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["key"] == "hex:ff00"
    assert summary["position"] == "1:4"
    assert summary["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert summary["original_timestamp"] == "1970-01-01T00:00:00.001Z"
    assert DlqRecord(TOPIC, 0, 0, None, b"order-7", None, {}).summary()["key"] == "order-7"
    assert DlqRecord(TOPIC, 0, 0, None, None, None, {}).summary()["key"] is None


# --- values ---------------------------------------------------------------------------------


def test_describe_value_decodes_our_avro_events() -> None:
    payload = EXAMPLE_PAYLOADS["webhook.requested"]
    event = build_event("webhook.requested", payload, producer="tests")
    view = describe_value(STORE, STORE.encode(event))
    assert view.error is None
    assert view.schema is not None and view.schema.startswith("webhook.requested v")
    assert view.decoded is not None
    assert view.as_json()["decoded"] == view.decoded
    json.dumps(view.as_json())  # JSON-ready: bytes fields become hex text


def test_describe_value_shows_foreign_bytes_as_a_hex_preview() -> None:
    raw = bytes(range(100))
    view = describe_value(STORE, raw)
    assert view.decoded is None
    assert view.size == 100
    assert view.error
    assert view.hex_preview is not None
    assert view.hex_preview.startswith("00 01 02")
    assert view.hex_preview.endswith("... (36 more bytes)")
    assert view.as_json() == {
        "size": 100,
        "undecodable": view.error,
        "hex_preview": view.hex_preview,
    }


def test_describe_value_without_a_store_or_a_value() -> None:
    assert describe_value(None, b"\x01").error == "no schema store"
    null = describe_value(STORE, None)
    assert (null.size, null.error, null.hex_preview) == (0, "no value (null record)", "")


# --- selections -----------------------------------------------------------------------------


def test_latest_orders_by_failure_time_then_position() -> None:
    a = record(0, 5, failed_at_ms=300)
    b = record(1, 2, failed_at_ms=100)
    c = record(0, 1, failed_at_ms=None, timestamp_ms=200)  # the record time stands in
    d = record(1, 3, failed_at_ms=100)
    assert latest([a, b, c, d], 3) == [d, c, a]
    assert latest([a, b, c, d], 10) == [b, d, c, a]
    assert latest([a, b], 0) == []


def test_with_reason_matches_any_case_and_keeps_order() -> None:
    records = [record(0, 0, reason="invalid"), record(0, 1), record(0, 2, reason="invalid")]
    assert with_reason(records, "INVALID") == [records[0], records[2]]
    assert with_reason(records, "expired") == []


# --- statistics -----------------------------------------------------------------------------


def test_summarize_counts_and_groups_by_fingerprint() -> None:
    records = [
        record(0, 0, error_message="timed out after 10s", failed_at_ms=200),
        record(1, 0, error_message="timed out after 30s", failed_at_ms=100, reason="expired"),
        record(0, 1, error_class="KeyError", error_message="to", failed_at_ms=300),
        record(1, 1, event_type=None, error_class="", error_message="", failed_at_ms=None),
    ]
    stats = summarize(TOPIC, records)
    assert stats.total == 4
    assert stats.by_reason == {"exhausted": 3, "expired": 1}
    assert stats.by_event_type == {"webhook.requested": 3, "(unknown)": 1}
    assert stats.by_partition == {0: 2, 1: 2}
    assert (stats.oldest_ms, stats.newest_ms) == (100, 300)
    top = stats.top_groups()
    assert [g.count for g in top] == [2, 1, 1]
    timeouts = top[0]
    assert timeouts.reasons == {"exhausted": 1, "expired": 1}
    assert (timeouts.first_ms, timeouts.last_ms) == (100, 200)
    assert timeouts.example == "0:0"  # the first one seen
    assert timeouts.sample_message == "timed out after 10s"
    no_class = next(g for g in top if g.error_class == "(none)")
    assert (no_class.first_ms, no_class.last_ms) == (None, None)
    assert len(stats.top_groups(1)) == 1


def test_stats_as_json_is_ordered_and_json_ready() -> None:
    records = [record(1, 0, reason="invalid"), record(0, 0), record(0, 1)]
    body = summarize(TOPIC, records).as_json(top=1)
    assert json.loads(json.dumps(body)) == body
    assert list(body["by_reason"]) == ["exhausted", "invalid"]  # most common first
    assert body["by_partition"] == {"0": 2, "1": 1}
    assert len(body["by_error"]) == 1
    assert body["by_error"][0]["count"] == 3
    assert body["oldest_failed_at"] == iso_ms(1_700_000_000_000)


def test_summarize_of_nothing() -> None:
    body = summarize(TOPIC, []).as_json()
    assert body["total"] == 0
    assert body["by_error"] == []
    assert body["oldest_failed_at"] is None
