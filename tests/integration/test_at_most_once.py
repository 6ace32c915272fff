"""At-most-once delivery on the real broker (``delivery: at_most_once``).

Failures go to the DLQ once, never to a retry tier. A SIGKILL mid-run loses at most the
records that were committed and not finished (the commit-first window: at most the family's
concurrency), and no record ever runs twice, though the idempotency ledger is off: the
commit before the run is what prevents the second run.

The ledger handlers note every start (``attempts``) and every finish (``ledger``) in SQLite;
the kill is triggered by the count of starts, not by a sleep.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine import (
    TEST_AUDIT,
    Ledger,
    audit_rig,
    committed_offsets,
    publish_load,
    read_topic,
    reconcile,
    record_headers,
    wait_for,
)
from tests.support.progress import wait_for_count

from streams.core import headers as h
from streams.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CONCURRENCY = 8
AT_MOST_ONCE_AUDIT = {
    **TEST_AUDIT,
    "concurrency": CONCURRENCY,
    "delivery": "at_most_once",
    "idempotency": {"enabled": False},  # "never twice" must not lean on the ledger
}


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, AT_MOST_ONCE_AUDIT) as made:
        yield made


def _topic(rig: dict[str, Any], suffix: str) -> str:
    return f"{rig['settings'].topic_prefix}audit{suffix}"


def _publish(rig: dict[str, Any], n: int, **details: str) -> list[str]:
    items = [
        ("audit.claim_submitted", {"subject_id": f"c-{i}", "actor_id": "t", "details": details})
        for i in range(n)
    ]
    return [r.event_id for r in rig["publisher"].publish_batch(items)]


def _starts(ledger: Ledger) -> Counter[str]:
    return Counter(r[0] for r in ledger.conn.execute("SELECT event_id FROM attempts"))


def test_failures_go_to_the_dlq_once_and_are_never_retried(rig: dict[str, Any]) -> None:
    settings, partitions = rig["settings"], rig["catalog"].family("audit").partitions
    failing = _publish(rig, 20, fail="always")
    once = _publish(rig, 10, fail_times="1")  # a retry would have succeeded
    refused = _publish(rig, 5, fail="permanent")
    fine = _publish(rig, 10)
    produced = failing + once + refused + fine
    worker = rig["start"]()
    worker.wait_ready()
    ledger: Ledger = rig["ledger"]

    def dead() -> list[Any]:
        return read_topic(settings, _topic(rig, ".dlq"), partitions, timeout_s=2)

    wait_for(lambda: len(dead()) >= 35 and ledger.count() >= 10, 60, "35 dead, 10 done")
    report = reconcile(rig, produced)
    print(f"\nat-most-once failures: {report}")
    reasons = {record_headers(m)[h.EVENT_ID]: record_headers(m)[h.DLQ_REASON] for m in dead()}
    assert {reasons[e] for e in failing + once} == {"at_most_once"}
    assert {reasons[e] for e in refused} == {"permanent"}
    assert ledger.ids() == set(fine)
    starts = _starts(ledger)
    assert set(starts) == set(produced)
    assert max(starts.values()) == 1, "an event ran twice"
    assert report["retries"] == 0
    for delay in ("1s", "2s"):
        assert read_topic(settings, _topic(rig, f".retry.{delay}"), partitions, 2) == []
    assert worker.metric("streams_events_total", family="audit", outcome="dead_lettered") == 35
    assert worker.metric("streams_events_total", family="audit", outcome="lost") == 0


def test_sigkill_loses_at_most_what_was_in_flight_and_runs_nothing_twice(
    rig: dict[str, Any],
) -> None:
    settings, partitions = rig["settings"], rig["catalog"].family("audit").partitions
    main = _topic(rig, "")
    produced = publish_load(rig["publisher"], 240, keys=120, sleep_ms="200")
    ledger: Ledger = rig["ledger"]
    worker = rig["start"]()
    worker.wait_ready()
    wait_for_count(lambda: sum(_starts(ledger).values()), 40, 60, "40 events started")
    worker.kill()
    started, finished = set(_starts(ledger)), ledger.ids()
    committed = committed_offsets(settings, main, partitions)
    by_offset = {
        (m.partition(), m.offset()): record_headers(m)[h.EVENT_ID]
        for m in read_topic(settings, main, partitions)
    }
    assert len(by_offset) == len(produced)
    passed = {eid for (p, off), eid in by_offset.items() if off < committed.get(p, -1)}
    in_flight = passed - finished  # committed, not finished when the process died
    running = started - finished
    assert len(finished) < len(produced), "the kill came after the load finished"
    assert running, "the kill landed while no handler ran: the test proved less"
    assert running <= in_flight, "a handler ran before its offset was committed"
    assert len(in_flight) <= CONCURRENCY, f"{len(in_flight)} committed ahead of the window"

    worker2 = rig["start"]()  # same worker id: static membership, quick takeover
    worker2.wait_ready(90)
    ends = len(produced)
    wait_for(
        lambda: (
            ledger.count() >= ends - len(in_flight)
            and sum(committed_offsets(settings, main, partitions).values()) == ends
        ),
        120,
        "the rest done and committed",
    )
    starts = _starts(ledger)
    twice = sorted(eid for eid, n in starts.items() if n > 1)
    done = ledger.ids()
    lost = set(produced) - done
    print(
        f"\nat-most-once SIGKILL: {len(produced)} produced, {len(finished)} done before the "
        f"kill, {len(running)} running and {len(in_flight - running)} committed but not "
        f"started at the kill, lost {len(lost)} (window {CONCURRENCY}), run twice {len(twice)}"
    )
    assert not twice, f"{len(twice)} events ran twice, e.g. {twice[:3]}"
    assert lost == in_flight, "lost other than what was in flight at the kill"
    assert not (in_flight & set(starts) - started), "a record in flight at the kill ran again"
    assert ledger.duplicates() == 0
    assert worker2.metric("streams_events_total", family="audit", outcome="lost") == 0


def test_sigterm_finishes_what_runs_and_nothing_runs_twice(rig: dict[str, Any]) -> None:
    settings, partitions = rig["settings"], rig["catalog"].family("audit").partitions
    main = _topic(rig, "")
    produced = publish_load(rig["publisher"], 240, keys=240, sleep_ms="200")  # no key waits
    ledger: Ledger = rig["ledger"]
    worker = rig["start"]()
    worker.wait_ready()
    wait_for_count(lambda: sum(_starts(ledger).values()), 40, 60, "40 events started")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()
    started, finished = set(_starts(ledger)), ledger.ids()
    assert len(finished) < len(produced), "the stop came after the load finished"
    assert started == finished, "the drain left a running handler unfinished"
    worker2 = rig["start"]()
    worker2.wait_ready(90)
    wait_for(
        lambda: (
            sum(committed_offsets(settings, main, partitions).values()) == len(produced)
            and worker2.metric("streams_in_flight", family="audit") == 0
        ),
        120,
        "the rest done and committed",
    )
    starts = _starts(ledger)
    lost = set(produced) - ledger.ids()
    print(f"\nat-most-once SIGTERM: {len(finished)} done before the stop, lost {len(lost)}")
    assert max(starts.values()) == 1, "an event ran twice"
    assert not lost & set(starts), "a started event was lost"
    assert len(lost) <= CONCURRENCY  # committed, skipped by the drain before a worker took it
