"""The pure redrive pieces: replay headers and decisions, pacing, outcome verdicts,
checkpoints and filters (issue 15)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from streams.core import headers as h
from streams.dlq.filters import DlqFilter, parse_age_ms, parse_time_ms
from streams.dlq.records import DlqRecord
from streams.dlq.redrive_model import Checkpoint, Pacer, Tally
from streams.dlq.replay import (
    REPLAY_COUNT,
    REPLAY_ID,
    REPLAY_SOURCE,
    decide,
    replay_headers,
    replayed_name,
)


def record(offset: int = 7, *, replays: int = 0, **headers: str) -> DlqRecord:
    base = {
        h.EVENT_ID: "evt-1",
        h.EVENT_TYPE: "webhook.requested",
        h.ATTEMPT: "3",
        h.ORIGINAL_TOPIC: "webhook",
        h.ORIGINAL_PARTITION: "2",
        h.ORIGINAL_OFFSET: "40",
        h.ERROR_CLASS: "streams.errors.Retryable",
        h.ERROR_MESSAGE: "HTTP 500 from partner",
        h.ERROR_FINGERPRINT: "abc",
        h.FAILED_AT_MS: "1000",
        h.DLQ_REASON: "exhausted",
        "traceparent": "00-aa-bb-01",
        "x-foreign": "kept",
    }
    if replays:
        base[REPLAY_COUNT] = str(replays)
    base.update(headers)
    return DlqRecord("webhook.dlq", 1, offset, 1000, b"key-\xff", b"\x00value\xfe", base)


def _decide(rec: DlqRecord, **over: object) -> object:
    kwargs: dict[str, object] = {
        "redrive_id": "rd-1",
        "main_topic": "webhook",
        "partitions": 3,
        "selection": DlqFilter(),
        "tenant": None,
        "states": {},
        "superseded": set(),
        "max_replays": 3,
        "now_ms": 5000,
    }
    kwargs.update(over)
    return decide(rec, **kwargs)  # type: ignore[arg-type]


def test_replay_keeps_bytes_and_event_headers_and_moves_failure_headers() -> None:
    out = _decide(record())
    assert out.action == "send"  # type: ignore[attr-defined]
    replay = out.replay  # type: ignore[attr-defined]
    assert (replay.key, replay.value, replay.partition) == (b"key-\xff", b"\x00value\xfe", 2)
    hs = replay.headers
    assert not set(h.FAILURE_HEADERS) & set(hs), "the attempt must start afresh"
    assert hs[replayed_name(h.ERROR_CLASS)] == "streams.errors.Retryable"
    assert hs[replayed_name(h.ATTEMPT)] == "3"
    assert hs[h.EVENT_ID] == "evt-1" and hs["traceparent"] and hs["x-foreign"] == "kept"
    assert (hs[REPLAY_ID], hs[REPLAY_COUNT], hs[REPLAY_SOURCE]) == ("rd-1", "1", "webhook.dlq/1:7")


def test_a_second_replay_replaces_the_history_and_counts_on() -> None:
    again = record(replays=1, **{replayed_name(h.ERROR_CLASS): "old", "streams-replayed-x": "y"})
    hs = replay_headers(again, redrive_id="rd-2", now_ms=1)
    assert hs[REPLAY_COUNT] == "2"
    assert hs[replayed_name(h.ERROR_CLASS)] == "streams.errors.Retryable"
    assert "streams-replayed-x" not in hs


def test_decisions_skip_resolved_parked_superseded_and_park_over_max() -> None:
    rec = record()
    assert _decide(rec, states={"webhook.dlq/1:7": "resolved"}).reason == "resolved"  # type: ignore[attr-defined]
    assert _decide(rec, states={"webhook.dlq/1:7": "parked"}).reason == "parked"  # type: ignore[attr-defined]
    assert _decide(rec, superseded={"webhook.dlq/1:7"}).reason == "superseded"  # type: ignore[attr-defined]
    assert _decide(record(replays=3)).action == "park"  # type: ignore[attr-defined]
    assert _decide(record(replays=2)).action == "send"  # type: ignore[attr-defined]
    sel = DlqFilter.build(reasons=["permanent"])
    assert _decide(rec, selection=sel).reason == "filtered"  # type: ignore[attr-defined]
    bad = record(**{h.ORIGINAL_PARTITION: "9"})
    assert _decide(bad).replay.partition is None  # type: ignore[attr-defined]


@given(rate=st.floats(1, 5000), gaps=st.lists(st.floats(0, 0.01), min_size=2, max_size=60))
def test_pacer_never_lets_a_window_exceed_the_rate(rate: float, gaps: list[float]) -> None:
    now = [100.0]
    pacer = Pacer(rate, lambda: now[0])
    sent: list[float] = []
    for gap in gaps:
        now[0] += gap
        now[0] += pacer.wait_s()
        sent.append(now[0])
        pacer.sent()
    for i in range(len(sent)):
        for j in range(i + 1, len(sent)):
            assert j - i <= rate * (sent[j] - sent[i]) + 1 + 1e-6


def test_unlimited_pacer_never_waits() -> None:
    pacer = Pacer(None, lambda: 0.0)
    pacer.sent()
    assert pacer.wait_s() == 0


def test_tally_canary_and_failure_rate() -> None:
    tally = Tally()
    canary = {f"p/{i}" for i in range(3)}
    for s in canary:
        tally.note_sent(s)
    assert tally.canary_verdict(canary) is None
    tally.note_done("p/0")
    tally.note_done("p/1")
    tally.note_done("p/unknown")  # not sent: ignored
    assert tally.canary_verdict(canary) is None
    tally.note_failed("p/2", "webhook.dlq")
    assert tally.canary_verdict(canary) == "1 of 3 canary records failed again"
    assert tally.over_failure_rate(0.2, 3) and not tally.over_failure_rate(0.5, 3)
    assert not tally.over_failure_rate(0.2, 10)  # too few outcomes yet


def test_checkpoint_round_trips() -> None:
    cp = Checkpoint(
        "rd-1",
        "webhook",
        "webhook.dlq",
        "webhook",
        "cli:ops",
        1,
        {"reasons": ["exhausted"]},
        {"rate_per_s": 5.0},
        {0: 10, 1: 0},
        {0: 4, 1: 0},
        {0: 100},
        {"webhook.dlq": {0: 10}},
    )
    again = Checkpoint.from_json(cp.to_json())
    assert again == cp and not again.finished
    again.next_offsets[0] = 10
    assert again.finished


def test_a_lane_event_is_redriven_to_its_lane_topic() -> None:
    lanes = {"high": "email.lane.high", "low": "email.lane.low"}
    high = _decide(record(**{h.LANE: "high"}), main_topic="email", lane_topics=lanes)
    replay = high.replay  # type: ignore[attr-defined]
    assert (replay.topic, replay.partition) == ("email.lane.high", 2)
    assert replay.headers[h.LANE] == "high"  # and keeps its lane for the next round
    for rec in (record(), record(**{h.LANE: "normal"}), record(**{h.LANE: "gone"})):
        out = _decide(rec, main_topic="email", lane_topics=lanes)
        assert out.replay.topic == "email"  # type: ignore[attr-defined]
    assert _decide(record(**{h.LANE: "high"})).replay.topic == "webhook"  # type: ignore[attr-defined]


def test_checkpoint_keeps_lane_marks_and_reads_older_ones_without() -> None:
    cp = Checkpoint(
        "rd-1", "email", "email.dlq", "email", "cli:ops", 1, {}, {}, {0: 1}, {0: 0}, {0: 5}
    )
    cp.lane_marks = {"email.lane.high": {0: 3, 1: 9}}
    assert Checkpoint.from_json(cp.to_json()) == cp
    old = json.loads(cp.to_json())
    del old["lane_marks"]
    assert Checkpoint.from_json(json.dumps(old).encode()).lane_marks == {}


def test_filter_round_trip_and_time_parsing() -> None:
    sel = DlqFilter.build(
        reasons=["Exhausted"],
        fingerprints=["ABC"],
        tenants=["acme"],
        since_ms=1,
        until_ms=2000,
        min_attempt=2,
        text="Partner",
        positions=[(1, 7)],
    )
    assert DlqFilter.from_description(sel.describe()) == sel
    assert sel.matches(record(), "acme")
    assert not sel.matches(record(), "globex")
    assert not sel.matches(record(offset=8), "acme")
    assert parse_age_ms("2h") == 7_200_000
    assert parse_time_ms("1970-01-01T00:00:01Z", 0) == 1000
    assert parse_time_ms("30m", 3_600_000) == 1_800_000


def test_writers_stream_one_row_per_record_and_breakdown_buckets() -> None:
    import csv
    import io
    import json

    from streams.dlq.records import DlqStats
    from streams.dlq.views import Breakdown, RecordWriter

    for fmt in ("jsonl", "csv", "table"):
        out = io.StringIO()
        writer = RecordWriter(out, fmt)
        writer.write(record(), "acme", None)
        writer.write(record(offset=8), None, "resolved")
        lines = out.getvalue().splitlines()
        assert len(lines) == (2 if fmt == "jsonl" else 3) and writer.count == 2
    rows = list(csv.DictReader(io.StringIO(_csv_of(record()))))
    assert rows[0]["tenant_id"] == "acme" and rows[0]["position"] == "1:7"
    assert json.loads(_jsonl_of(record()))["state"] == "open"

    breakdown = Breakdown(DlqStats("webhook.dlq"))
    day_ms = 20_000 * 86_400_000  # 2024-10-04
    breakdown.add(record(**{h.FAILED_AT_MS: str(day_ms + 3_600_000 + 5)}), "acme")
    breakdown.add(record(**{h.FAILED_AT_MS: str(day_ms + 3_600_000 + 9)}), None)
    breakdown.add(record(**{h.FAILED_AT_MS: str(day_ms + 7_200_000)}), "acme")
    body = breakdown.as_json()
    assert body["by_tenant"] == {"acme": 2, "(none)": 1}
    assert body["per_hour"] == {"2024-10-04T01:00:00.000Z": 2, "2024-10-04T02:00:00.000Z": 1}
    assert body["per_day"] == {"2024-10-04": 3}


def _csv_of(rec: DlqRecord) -> str:
    import io

    from streams.dlq.views import RecordWriter

    out = io.StringIO()
    RecordWriter(out, "csv").write(rec, "acme")
    return out.getvalue()


def _jsonl_of(rec: DlqRecord) -> str:
    import io

    from streams.dlq.views import RecordWriter

    out = io.StringIO()
    RecordWriter(out, "jsonl").write(rec)
    return out.getvalue()
