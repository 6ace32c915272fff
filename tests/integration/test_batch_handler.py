"""Batch handlers on the real broker (issue 18): one bad event does not fail its batch-mates.

A ``streams worker`` loads the batch handler of ``tests.support.batch_handlers``
(``Batch(max_events=100, max_wait_ms=1000)``) for ``audit.claim_submitted``; its side
effects are rows of a SQLite ledger with a UNIQUE event id, written in one transaction per
call. Of 100 events, 3 are marked retryable on their first attempt: exactly those 3 reach
the retry tier (read back from the topic), the 97 others are done once at attempt 1, and
the 3 are done at attempt 2. The second test SIGKILLs the worker while a batch runs (when
the handler has been called with the held wave, counted in its ledger) and checks the
same outcome after a restart, with the first wave's done-markers surviving the kill.
"""

from __future__ import annotations

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
    iter_event_ids,
    read_topic,
    wait_for,
)
from tests.support.progress import wait_for_count

from streams.publish.publisher import Publisher
from streams.settings import Settings

pytestmark = pytest.mark.kafka

PARTITIONS = TEST_AUDIT["partitions"]
KEYS = 10  # 10 subjects: a batch holds several events of each key


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with audit_rig(
        make_settings, tmp_path, TEST_AUDIT, handlers="tests.support.batch_handlers"
    ) as made:
        yield made


def claims(start: int, n: int, *, marked: set[int], **details: str) -> list[tuple[str, Any]]:
    """Claims ``seq`` start..start+n-1 over KEYS subjects; ``marked`` ones retryable once."""
    return [
        (
            "audit.claim_submitted",
            {
                "subject_id": f"claim-{i % KEYS}",
                "actor_id": "batch-test",
                "details": {
                    **details,
                    "seq": str(i),
                    **({"fail_times": "1"} if i in marked else {}),
                },
            },
        )
        for i in range(start, start + n)
    ]


def publish(publisher: Publisher, items: list[Any]) -> list[str]:
    return [r.event_id for r in publisher.publish_batch(items)]


def done_attempts(ledger: Ledger) -> dict[str, int]:
    return dict(ledger.conn.execute("SELECT event_id, attempt FROM ledger").fetchall())


def runs_per_event(ledger: Ledger, pid: int | None = None) -> Counter[str]:
    rows = [r for r in ledger.attempts() if pid is None or r["pid"] == pid]
    return Counter(r["event_id"] for r in rows)


def calls(ledger: Ledger) -> list[tuple[int, int, list[str], int]]:
    """(pid, size, event ids, key order ok) of every batch handler call."""
    rows = ledger.conn.execute("SELECT pid, size, ids, key_order_ok FROM batch_calls").fetchall()
    return [(pid, size, ids.split(","), ok) for pid, size, ids, ok in rows]


def check_outcomes(rig: dict[str, Any], produced: list[str], marked: list[str]) -> None:
    """Exactly the marked events in the retry tier (once each), nothing in the next tier or
    the DLQ; every event done once: the others at attempt 1, the marked at attempt 2."""
    settings: Settings = rig["settings"]
    prefix = settings.topic_prefix
    tier = read_topic(settings, f"{prefix}audit.retry.1s", PARTITIONS)
    assert sorted(iter_event_ids(tier)) == sorted(marked), "not exactly the 3 in the retry tier"
    assert read_topic(settings, f"{prefix}audit.retry.2s", PARTITIONS) == []
    assert read_topic(settings, f"{prefix}audit.dlq", PARTITIONS) == []
    ledger: Ledger = rig["ledger"]
    done = done_attempts(ledger)
    assert set(done) == set(produced), "an event lost, or an unknown one done"
    assert {eid for eid, attempt in done.items() if attempt == 1} == set(produced) - set(marked)
    assert {done[eid] for eid in marked} == {2}
    assert ledger.duplicates() == 0, "a done event's side effect ran twice"
    assert all(ok for *_, ok in calls(ledger)), "a key's events reached the handler out of order"


def test_three_of_a_hundred_retry_alone_and_the_97_are_done_once(rig: dict[str, Any]) -> None:
    marked_seqs = {5, 42, 87}
    items = claims(0, 100, marked=marked_seqs)
    produced = publish(rig["publisher"], items)
    marked = [produced[i] for i in sorted(marked_seqs)]
    worker = rig["start"]()
    worker.wait_ready()
    ledger: Ledger = rig["ledger"]
    wait_for_count(ledger.count, 100, 60, "100 events done")
    check_outcomes(rig, produced, marked)
    runs = runs_per_event(ledger)
    assert {eid: n for eid, n in runs.items() if n != 1} == dict.fromkeys(marked, 2), (
        "each of the 97 is handed to the handler exactly once, each marked one twice"
    )
    handled = calls(ledger)
    assert sum(size for _, size, _, _ in handled) == 103
    assert len(handled) <= 10, f"the events were not batched: {len(handled)} calls"
    assert worker.metric("streams_batch_size_events_sum") == 103
    assert worker.metric("streams_batch_flushes_total") == len(handled)
    assert worker.metric("streams_retries_total") == 3
    assert worker.metric("streams_events_total", outcome="done") == 100


def test_sigkill_mid_batch_redoes_the_batch_and_keeps_what_was_done(
    rig: dict[str, Any], tmp_path: Path
) -> None:
    settings: Settings = rig["settings"]
    publisher: Publisher = rig["publisher"]
    ledger: Ledger = rig["ledger"]
    prefix = settings.topic_prefix
    # wave 1 finishes in worker 1; its offsets (main topic and retry tier) are committed
    first = publish(publisher, claims(0, 50, marked={7, 31}))
    worker = rig["start"](STREAMS_TEST_BATCH_GATE=str(tmp_path / "never-opened"))
    worker.wait_ready()
    wait_for_count(ledger.count, 50, 60, "wave 1 done")

    def committed(topic: str) -> int:
        return sum(max(0, o) for o in committed_offsets(settings, topic, PARTITIONS).values())

    wait_for(lambda: committed(f"{prefix}audit") == 50, 30, "wave 1 committed")
    wait_for(lambda: committed(f"{prefix}audit.retry.1s") == 2, 30, "its retries committed")
    # wave 2 is held in the handler; 10 wave-1 ids come again behind it (same keys)
    second = publish(publisher, claims(50, 50, marked={66}, hold="1"))
    again = [eid for eid in first if eid not in (first[7], first[31])][:10]
    repeats = [
        {"event_type": event_type, "payload": payload, "event_id": eid}
        for (event_type, payload), eid in zip(claims(0, 50, marked=set()), first, strict=True)
        if eid in again
    ]
    assert publish(publisher, repeats) == again
    pid1 = worker.started.proc.pid
    wave2 = set(second)
    wait_for_count(
        lambda: sum(1 for pid, _, ids, _ in calls(ledger) if pid == pid1 and wave2 & set(ids)),
        1,
        60,
        "the handler called with wave 2",
    )
    worker.kill()  # mid-batch: the handler holds wave 2 before any side effect
    assert ledger.count() == 50, "a held event was done before the kill"
    worker = rig["start"]("w1")  # same worker id, no gate
    worker.wait_ready(90)
    wait_for_count(ledger.count, 100, 60, "every event done after the restart")
    marked = [first[7], first[31], second[66 - 50]]
    check_outcomes(rig, first + second, marked)
    runs = runs_per_event(ledger)
    for eid in first:  # wave 1 never ran again: its done-markers survived the kill
        assert runs[eid] == (2 if eid in marked else 1), f"{eid} ran {runs[eid]} times"
    assert worker.metric("streams_duplicates_skipped_total") == len(again), (
        "the repeated ids are skipped by the recovered ledger, never handed to the handler"
    )
    pid2 = worker.started.proc.pid
    rerun = runs_per_event(ledger, pid2)
    assert wave2 <= set(rerun), "the killed batch was not redone"
