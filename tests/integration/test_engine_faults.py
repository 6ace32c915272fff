"""Faults on the real broker: SIGKILL and SIGTERM under load, rebalances while records wait.

The reconciliation follows reliability.md: every produced id is in the ledger (UNIQUE event
id) or the DLQ, never both; no side effect happened twice; per-key order held.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from tests.support.engine import (
    TEST_AUDIT,
    Ledger,
    audit_rig,
    committed_offsets,
    publish_load,
    reconcile,
    wait_for,
)
from tests.support.progress import wait_for_count, wait_for_text

from streams.core import headers as h
from streams.publish.publisher import Publisher
from streams.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FAULT_AUDIT = {
    **TEST_AUDIT,
    "retry": {**TEST_AUDIT["retry"], "delays": ["1s", "2s", "1h"], "max_attempts": 4},
}


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, FAULT_AUDIT) as made:
        yield made


def test_sigkill_under_load_loses_nothing_and_duplicates_nothing(rig: dict[str, Any]) -> None:
    produced = publish_load(rig["publisher"], 3000, keys=60, sleep_ms="3")
    # kill when 10%, 40% and 70% of the load is done: each kill lands mid-load, whatever the
    # machine's speed, and each restarted worker has done work of its own before its kill
    thresholds = [len(produced) * share // 10 for share in (1, 4, 7)]
    kills = 0
    worker = rig["start"]()
    worker.wait_ready()
    ledger: Ledger = rig["ledger"]
    for threshold in thresholds:
        wait_for_count(ledger.count, threshold, 120, f"{threshold} events done")
        worker.kill()
        at_kill = ledger.count()
        assert at_kill < len(produced), f"kill {kills + 1} came after the load finished"
        kills += 1
        worker = rig["start"]()  # same worker id: static membership, quick takeover
        worker.wait_ready(90)
    wait_for(lambda: ledger.count() >= len(produced), 120, "all events done")
    report = reconcile(rig, produced)
    print(f"\nSIGKILL x{kills}: {report}")
    assert kills == len(thresholds), "the load finished before every kill: the test proved less"
    assert report["done"] == len(produced)
    # a crash after the side effect but before the done-marker reruns the handler: the peer
    # (the ledger's UNIQUE id) drops it and we count it; it is never a second side effect
    assert report["redeliveries"] >= report["duplicates_dropped_by_peer"]


def test_sigterm_drains_in_bound_and_nothing_finished_runs_again(rig: dict[str, Any]) -> None:
    produced = publish_load(rig["publisher"], 2000, keys=40, sleep_ms="5")
    worker = rig["start"](STREAMS_SHUTDOWN_TIMEOUT_S="20")
    worker.wait_ready()
    ledger: Ledger = rig["ledger"]
    wait_for(lambda: ledger.count() > 200, 60, "some progress")
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(25)
    took = time.monotonic() - sent
    assert code == 0, worker.tail()
    assert took < 20
    first_pid = worker.proc.pid if worker.proc else -1
    done_before = ledger.ids()
    worker2 = rig["start"]()
    worker2.wait_ready(90)
    wait_for(lambda: ledger.count() >= len(produced), 120, "all events done")
    rerun = ledger.conn.execute(
        "SELECT count(*) FROM attempts WHERE pid != ? AND event_id IN "
        "(SELECT event_id FROM ledger WHERE pid = ?)",
        (first_pid, first_pid),
    ).fetchone()[0]
    print(f"\nSIGTERM drained in {took:.2f}s; {len(done_before)} done before, rerun {rerun}")
    assert rerun == 0, "a handler ran again for an event that had finished"
    assert ledger.duplicates() == 0
    reconcile(rig, produced)


def _schedule(settings: Settings, publisher: Publisher, delay_s: float) -> tuple[str, int]:
    """Put an event straight into the 1h retry tier, due ``delay_s`` from now."""
    rec = publisher.prepare(
        "audit.claim_submitted", {"subject_id": "claim-late", "actor_id": "t", "details": {}}
    )
    due_ms = int(time.time() * 1000 + delay_s * 1000)
    headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in rec.headers]
    headers += [(h.ATTEMPT, b"2"), (h.DUE_AT_MS, str(due_ms).encode())]
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    producer.produce(
        f"{settings.topic_prefix}audit.retry.1h",
        key=rec.key,
        value=rec.value,
        headers=headers,
        partition=0,
    )
    producer.flush(10)
    return rec.event_id, due_ms


@pytest.mark.parametrize("delay_s", [3600.0, 20.0], ids=["an-hour-ahead", "seconds-ahead"])
def test_waiting_record_survives_a_worker_joining_and_leaving(
    rig: dict[str, Any], delay_s: float
) -> None:
    settings: Settings = rig["settings"]
    ledger: Ledger = rig["ledger"]
    first = rig["start"]("w1")
    first.wait_ready()
    event_id, due_ms = _schedule(settings, rig["publisher"], delay_s)
    wait_for(lambda: first.metric("streams_waiting") >= 1, 20, "the record to be held")
    started = time.monotonic()
    second = rig["start"]("w2", STREAMS_WORKER_ID="")  # dynamic member: leaves at once
    second.wait_ready(60)
    wait_for(lambda: first.health()[0] == 200, 60, "the first worker to settle after the join")
    joined_s = time.monotonic() - started
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0
    wait_for(
        lambda: (
            first.health()[0] == 200 and first.metric("streams_waiting") >= 1
            if delay_s > 60
            else first.health()[0] == 200
        ),
        60,
        "the group to settle",
    )
    settled_s = time.monotonic() - started
    assert settled_s < 60, "the group did not settle within the rebalance timeout"
    if delay_s > 60:
        assert ledger.attempts(event_id) == [], "the record ran early"
        committed = committed_offsets(settings, f"{settings.topic_prefix}audit.retry.1h", 3)
        assert committed.get(0, -1) <= 0, "the waiting record was committed past (lost)"
    else:
        wait_for(lambda: event_id in ledger.ids(), 30, "the record to run")
        attempts = ledger.attempts(event_id)
        assert len(attempts) == 1, "the record ran more than once"
        assert attempts[0]["at_ms"] >= due_ms, "the record ran before its due time"
        assert attempts[0]["at_ms"] - due_ms < 2000, "the record ran late"
    print(f"\njoin settled in {joined_s:.1f}s, join+leave in {settled_s:.1f}s")


@pytest.mark.parametrize("how", ["second-sigterm", "deadline"])
def test_forced_exit_commits_nothing_unfinished(rig: dict[str, Any], how: str) -> None:
    produced = publish_load(rig["publisher"], 10, keys=10, sleep_ms="4000")
    timeout_s = "2" if how == "deadline" else "30"
    worker = rig["start"](STREAMS_DRAIN_TIMEOUT_S="20", STREAMS_SHUTDOWN_TIMEOUT_S=timeout_s)
    worker.wait_ready()
    ledger: Ledger = rig["ledger"]
    wait_for(lambda: len(ledger.attempts()) >= 10, 30, "every handler to be running")
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    if how == "second-sigterm":  # once the first is being handled (not a guessed sleep)
        wait_for_text(worker.tail, "SIGTERM: draining", 10, "the worker to start draining")
        worker.signal(signal.SIGTERM)
    code = worker.wait(15)
    took = time.monotonic() - sent
    assert code == 3, worker.tail()
    assert took < (1.5 if how == "second-sigterm" else 3.5)
    assert ledger.count() == 0, "a handler finished: the test did not interrupt anything"
    # nothing was committed: a new worker runs every event again
    rig["start"]("w1")
    wait_for(lambda: ledger.count() == len(produced), 60, "every event after the restart")
    assert len(ledger.attempts()) == 2 * len(produced)
