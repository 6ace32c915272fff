"""Fault matrix (reliability.md), the engine's rows, on the session broker:

- a rebalance storm: a second and third worker take turns joining and leaving under load;
  idempotency and rate-limit state follow their partitions;
- a record that fits its main topic but not its retry tier: DLQ with a clear reason, the
  partition keeps flowing;
- the worker's wall clock ahead of and behind the broker's: no retry runs before its due
  time.

Faults land at counts of side effects (the SQLite ledger), never after a sleep; each test
prints the reconciliation (``tests.support.engine.reconcile``).
"""

from __future__ import annotations

import itertools
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from tests.support.engine import (
    REPO,
    TEST_AUDIT,
    Ledger,
    WorkerProcess,
    audit_rig,
    publish_load,
    read_topic,
    reconcile,
    record_headers,
    wait_for,
)
from tests.support.progress import wait_for_count

from streams.core import headers as h
from streams.settings import Settings
from streams.worker.ratelimit import key_partition

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SHIFT_PATH = f"{REPO}:{REPO / 'tests' / 'support' / 'clock_shift'}"
HOT_LIMIT = 8  # a hot subject's events allowed per day; the rest are rejected
STORM_PARTITIONS = 6  # with 3 faust's assignment left all but one partition on w1
STORM = {
    **TEST_AUDIT,
    "partitions": STORM_PARTITIONS,
    "rate_limits": [
        {
            "name": "per_subject",
            "scope": "key",
            "limit": HOT_LIMIT,
            "per": "1d",  # no refill worth a token while the test runs
            "on_exceed": "reject",
            "max_defer": "1h",
        }
    ],
}
STEPS = 20  # joins; each joiner leaves again
SUBJECTS_PER_STEP, EVENTS_PER_SUBJECT, HOT_PER_STEP, DUPS_PER_STEP = 8, 5, 2, 4


def _rig(
    make_settings: Callable[..., Settings], tmp_path: Path, audit: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, audit) as made:
        yield made


@pytest.fixture
def storm_rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield from _rig(make_settings, tmp_path, STORM)


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield from _rig(make_settings, tmp_path, TEST_AUDIT)


def _claim(subject: str, seq: int, **details: str) -> dict[str, Any]:
    return {
        "event_type": "audit.claim_submitted",
        "event_id": str(uuid.uuid4()),
        "payload": {
            "subject_id": subject,
            "actor_id": "storm",
            "details": {**details, "seq": str(seq)},
        },
    }


def _hot_subjects(partitions: int) -> list[str]:
    """One subject per partition: each partition's move carries a hot bucket."""
    found: dict[int, str] = {}
    for n in range(1000):
        found.setdefault(key_partition(f"hot-{n}", partitions), f"hot-{n}")
        if len(found) == partitions:
            break
    return [found[p] for p in sorted(found)]


def _owner_changes(ledger: Ledger, partitions: int, after_rowid: int = 0) -> Counter[int]:
    """Per partition, how often the process doing its side effects changed (rowid order)."""
    rows = ledger.conn.execute(
        "SELECT subject_id, pid FROM ledger WHERE rowid > ? ORDER BY rowid", (after_rowid,)
    ).fetchall()
    last: dict[int, int] = {}
    moves: Counter[int] = Counter()
    for subject, pid in rows:
        p = key_partition(subject, partitions)
        if p in last and last[p] != pid:
            moves[p] += 1
        last[p] = pid
    return moves


def test_rebalance_storm_state_follows_the_partitions(storm_rig: dict[str, Any]) -> None:
    rig = storm_rig
    ledger: Ledger = rig["ledger"]
    publisher = rig["publisher"]
    hot = _hot_subjects(STORM_PARTITIONS)
    first = rig["start"]("w1")  # static member: stays through the storm
    first.wait_ready()
    items: dict[str, dict[str, Any]] = {}
    dup_ids: list[str] = []
    ordinary: list[str] = []
    extras: list[WorkerProcess] = []
    mid_load = 0
    for step in range(STEPS):
        batch = [
            _claim(f"s{step}-{j}", k, sleep_ms="300")
            for k in range(EVENTS_PER_SUBJECT)
            for j in range(SUBJECTS_PER_STEP)
        ]
        ordinary += [item["event_id"] for item in batch]
        batch += [_claim(s, step * HOT_PER_STEP + k) for s in hot for k in range(HOT_PER_STEP)]
        done_ids = sorted(set(ordinary) & ledger.ids() - set(dup_ids))
        dups = [items[eid] for eid in done_ids[:DUPS_PER_STEP]]  # done: published again
        dup_ids += [item["event_id"] for item in dups]
        items.update((item["event_id"], item) for item in batch)
        before = ledger.count()
        publisher.publish_batch(batch + dups)
        # the membership changes once this step's load is running: a join and a leave
        wait_for_count(ledger.count, before + SUBJECTS_PER_STEP, 60, f"step {step} under way")
        joining = rig["start"](f"w{2 + step % 2}", STREAMS_WORKER_ID="")  # dynamic member
        if extras:
            leaving = extras.pop()
            leaving.signal(signal.SIGTERM)
            mid_load += ledger.count() < before + len(batch)
            assert leaving.wait(40) == 0, leaving.tail()
        extras.append(joining)
        joining.wait_ready(90)
    for extra in extras:
        extra.stop()
    expected_done = len(ordinary) + HOT_LIMIT * len(hot)
    wait_for(lambda: ledger.count() >= expected_done, 90, "every allowed event done")
    produced = list(items)
    rejected = len(produced) - expected_done
    wait_for(
        lambda: len(read_topic(rig["settings"], dlq_topic(rig), STORM_PARTITIONS)) >= rejected,
        60,
        "every rejected event in the DLQ",
    )
    report = reconcile(rig, produced)
    done_by_subject = Counter(
        s for (s,) in ledger.conn.execute("SELECT subject_id FROM ledger").fetchall()
    )
    dup_runs = sum(len(ledger.attempts(eid)) for eid in dup_ids)
    spent_at = {  # the rowid of each hot subject's last allowed event: its bucket is empty
        s: ledger.conn.execute(
            "SELECT max(rowid) FROM ledger WHERE subject_id = ?", (s,)
        ).fetchone()[0]
        for s in hot
    }
    moved_after_spent = {
        s: _owner_changes(ledger, STORM_PARTITIONS, spent_at[s])[key_partition(s, STORM_PARTITIONS)]
        for s in hot
    }
    moves = _owner_changes(ledger, STORM_PARTITIONS)
    print(
        f"\nrebalance storm: {STEPS} joins and {STEPS} leaves ({mid_load} while a step's "
        f"load ran); partition owner changes {dict(moves)}; hot subjects done "
        f"{[done_by_subject[s] for s in hot]}, their partition moved after the bucket was "
        f"spent {moved_after_spent}; duplicates published {len(dup_ids)}, handler runs for "
        f"them {dup_runs}; {report}"
    )
    assert [done_by_subject[s] for s in hot] == [HOT_LIMIT] * len(hot), "a bucket was reset"
    assert report["dlq_reasons"] == {"rejected": len(produced) - expected_done}
    assert dup_runs == len(dup_ids), "a duplicate published across the storm ran again"
    assert report["duplicates_dropped_by_peer"] == 0
    assert len(moves) >= 2, f"the storm moved too few partitions: {dict(moves)}"
    assert any(moved_after_spent.values()), "no spent bucket moved: the test proved less"


def dlq_topic(rig: dict[str, Any]) -> str:
    return f"{rig['settings'].topic_prefix}audit.dlq"


def _shrink(settings: Settings, topic: str, max_bytes: int) -> None:
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    entry = ConfigEntry(
        "max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_record_too_large_for_its_retry_tier_goes_to_the_dlq_and_the_partition_flows(
    rig: dict[str, Any],
) -> None:
    settings: Settings = rig["settings"]
    ledger: Ledger = rig["ledger"]
    worker = rig["start"]("w1", STREAMS_DRAIN_TIMEOUT_S="2")  # a stuck route: short drain
    worker.wait_ready()
    tier = f"{settings.topic_prefix}audit.retry.1s"
    _shrink(settings, tier, 4096)  # after the start: the worker's topology check passed
    victim = rig["publisher"].publish(
        "audit.claim_submitted",
        {
            "subject_id": "claim-big",
            "actor_id": "t",
            "details": {"fail_times": "1", "seq": "0", "pad": "x" * 8000},
        },
    )
    followers = publish_load(rig["publisher"], 20, keys=1, start=1)  # subject claim-0
    same_key = [
        rig["publisher"]
        .publish(
            "audit.claim_submitted",
            {"subject_id": "claim-big", "actor_id": "t", "details": {"seq": str(k)}},
        )
        .event_id
        for k in range(1, 6)
    ]

    def dead() -> list[dict[str, str]]:
        return [record_headers(m) for m in read_topic(settings, dlq_topic(rig), 3, 2.0)]

    # progress bound: the outcome, or five failed produces of the retry record
    wait_for(
        lambda: (
            (dead() and set(same_key) <= ledger.ids())
            or worker.metric("streams_route_failures_total") >= 5
        ),
        60,
        "the victim's outcome",
    )
    failures = worker.metric("streams_route_failures_total")
    letters = dead()
    print(f"\noversize for the 1s tier: {failures:g} route failures, DLQ {letters}")
    assert [d.get(h.EVENT_ID) for d in letters] == [victim.event_id], f"{failures:g} failures"
    assert letters[0].get(h.DLQ_REASON)
    assert "large" in letters[0].get(h.ERROR_MESSAGE, "").lower()
    wait_for(lambda: set(same_key + followers) <= ledger.ids(), 30, "the partition to flow")
    report = reconcile(rig, [victim.event_id, *followers, *same_key])
    print(report)


@pytest.mark.parametrize("shift_s", [600, -600], ids=["worker-10min-ahead", "worker-10min-behind"])
def test_worker_clock_skew_never_runs_a_retry_before_its_due_time(
    rig: dict[str, Any], shift_s: int
) -> None:
    ledger: Ledger = rig["ledger"]
    worker = rig["start"]("w1", PYTHONPATH=SHIFT_PATH, STREAMS_TEST_CLOCK_SHIFT_S=str(shift_s))
    worker.wait_ready()
    failing = publish_load(rig["publisher"], 40, keys=40, fail_times="2")  # 2 retries each
    wait_for(  # progress bound: every event done, or five retry records refused
        lambda: (
            ledger.count() >= len(failing) or worker.metric("streams_route_failures_total") >= 5
        ),
        60,
        "every event done",
    )
    failures = worker.metric("streams_route_failures_total")
    assert ledger.count() >= len(failing), f"stuck: {failures:g} retry records refused"
    delays_ms = {2: 1000, 3: 2000}  # TEST_AUDIT's ladder, no jitter
    early: list[int] = []
    lateness_ms: list[int] = []
    real_minus_due: list[int] = []
    shifts_ms: list[int] = []
    for eid in failing:
        runs = sorted(ledger.attempts(eid), key=lambda r: r["attempt"])
        assert [r["attempt"] for r in runs] == [1, 2, 3], runs
        for prev, run in itertools.pairwise(runs):
            shifts_ms.append(run["at_ms"] - run["real_ms"])
            lateness_ms.append(run["at_ms"] - run["due_at_ms"])  # the worker's own clock
            real_minus_due.append(run["real_ms"] - run["due_at_ms"])
            # real time between the failure and its retry: never shorter than the delay
            if run["real_ms"] - prev["real_ms"] < delays_ms[run["attempt"]]:
                early.append(run["real_ms"] - prev["real_ms"])
    report = reconcile(rig, failing)
    print(
        f"\nworker clock {shift_s:+d}s: {len(lateness_ms)} retries, clock offset seen "
        f"{min(shifts_ms)}..{max(shifts_ms)} ms; actual - due (worker clock) "
        f"{min(lateness_ms)}..{max(lateness_ms)} ms; real clock - due header "
        f"{min(real_minus_due)}..{max(real_minus_due)} ms; {report}"
    )
    assert all(abs(s - shift_s * 1000) < 1000 for s in shifts_ms), "the skew was not in effect"
    assert min(lateness_ms) >= 0, "a retry ran before its due time"
    assert not early, f"retries ran sooner than their delay after the failure: {early}"
    assert max(lateness_ms) < 3000, "a retry ran far past its due time"
    assert report["retries"] == 2 * len(failing) and report["redeliveries"] == 0
