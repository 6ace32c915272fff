"""Pure parts of the operator views: heartbeats, the heartbeat snapshot, offsets arithmetic,
statistics from status records, the rate-limit reset of a worker's own buckets."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.test_worker_ratelimit import PER_USER, Rig
from tests.unit.worker_fakes import TP

from streams.broker.offsets import PartitionOffsets
from streams.control.model import Command
from streams.core import heartbeat
from streams.core.heartbeat import BadHeartbeat, FamilyBeat, Heartbeat
from streams.core.stats import ALL_TENANTS, StatusStats
from streams.worker.heartbeat import HeartbeatLoop
from streams.worker.ratelimit import key_partition
from streams.worker.ratelimit_reset import RateLimitResets

MIN = 60_000


def beat(worker: str, at_ms: int, **families: FamilyBeat) -> Heartbeat:
    return Heartbeat(worker, at_ms, 1000, dict(families), {"smtp:25": "open"})


def test_heartbeat_round_trip_and_precise_errors() -> None:
    b = beat("w1", 5, email=FamilyBeat(3, True, {"email": [1, 0]}))
    decoded = heartbeat.decode(b.encode())
    assert decoded.families["email"] == FamilyBeat(3, True, {"email": [0, 1]})
    assert decoded.breakers == {"smtp:25": "open"}
    with pytest.raises(BadHeartbeat, match="worker_id"):
        heartbeat.decode(b'{"at_ms": 1, "interval_ms": 1}')
    with pytest.raises(BadHeartbeat, match=r"families\.email\.partitions"):
        heartbeat.decode(
            json.dumps(
                {
                    "worker_id": "w",
                    "at_ms": 1,
                    "interval_ms": 1,
                    "families": {"email": {"partitions": {"email": ["x"]}}},
                }
            ).encode()
        )
    with pytest.raises(BadHeartbeat, match="not JSON"):
        heartbeat.decode(b"\xff")


def test_silent_workers_expire_after_missed_intervals() -> None:
    beats = {
        "w1": beat("w1", 10_000, email=FamilyBeat(2, partitions={"email": [0]})),
        "w2": beat("w2", 6_999, email=FamilyBeat(5, partitions={"email": [1]})),
    }
    assert [b.worker_id for b in heartbeat.live(beats, 10_000, expire_after=3)] == ["w1"]
    both = heartbeat.live(beats, 9_999, expire_after=3)
    assert heartbeat.in_flight(both, "email") == 7
    assert heartbeat.owners(both, "email") == {0: "w1", 1: "w2"}


def test_snapshot_reports_partitions_in_flight_paused_and_breakers() -> None:
    fams = {
        "email": SimpleNamespace(
            topics=SimpleNamespace(all=("email", "email.retry.10s", "email.dlq")),
            lanes=SimpleNamespace(in_flight=4),
            batches=[5],  # one event waiting for its batch
            schedulers=[[1, 2], [3]],
        )
    }
    loop = HeartbeatLoop(
        worker_id="w9",
        topic="streams.workers",
        interval_s=2.0,
        sender=None,  # type: ignore[arg-type]
        families=fams,
        assignment=lambda: {TP("email", 2), TP("email.retry.10s", 2), TP("other", 0)},
        breakers=lambda: {"smtp:25": "half_open"},
        clock_ms=lambda: 42,
        paused=lambda family: family == "email",
    )
    snap = loop.snapshot()
    assert snap == Heartbeat(
        "w9",
        42,
        2000,
        {"email": FamilyBeat(5, True, {"email": [2], "email.retry.10s": [2]}, waiting=3)},
        {"smtp:25": "half_open"},
    )


def test_next_offset_and_lag() -> None:
    assert PartitionOffsets("t", 0, low=0, high=10, committed=None).lag == 10
    assert PartitionOffsets("t", 0, low=5, high=10, committed=3).next_offset == 5  # retention
    assert PartitionOffsets("t", 0, low=0, high=10, committed=7).lag == 3
    assert PartitionOffsets("t", 0, low=0, high=10, committed=10).lag == 0


def status(event_id: str, state: str, at_ms: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "family": "email",
        "event_type": "email.requested",
        "tenant_id": extra.pop("tenant", "acme"),
        "state": state,
        "attempt": 1,
        "at_ms": at_ms,
        **extra,
    }


def test_stats_of_a_known_workload() -> None:
    stats = StatusStats()
    t0 = 100 * MIN
    # e1: published at t0, runs at +100 for 50 ms (running coalesced away: done carries it)
    stats.apply(status("e1", "done", t0 + 150, started_at_ms=t0 + 100, published_at_ms=t0))
    # e2: running seen, fails once, then done
    stats.apply(status("e2", "running", t0 + 300, published_at_ms=t0 + 100))
    stats.apply(
        status("e2", "retrying", t0 + 400, started_at_ms=t0 + 300, published_at_ms=t0 + 100)
    )
    stats.apply(status("e2", "running", t0 + 1400))
    stats.apply(status("e2", "done", t0 + 1500, started_at_ms=t0 + 1400))
    # e3: of another tenant, dead-lettered
    stats.apply(status("e3", "dead_lettered", t0 + 200, started_at_ms=t0 + 190, tenant="other"))
    stats.apply_raw(b"not json")
    stats.apply({"event_id": "x"})
    assert stats.ignored == 2
    [row] = stats.summary(t0 + MIN, 3_600_000)
    assert row["completed"] == 2 and row["retries"] == 1 and row["dead_lettered"] == 1
    assert row["failures"] == 2
    # waits: e1 100 ms, e2 200 ms; processing: 50, 100, 100, 10 ms
    assert row["avg_wait_ms"] == 150.0
    assert row["avg_processing_ms"] == 65.0
    assert row["throughput_per_min"] == round(2 / 60, 3)
    [acme] = stats.summary(t0 + MIN, 3_600_000, tenant="acme")
    assert acme["dead_lettered"] == 0 and acme["completed"] == 2
    assert stats.summary(t0 + MIN, 3_600_000, tenant="nobody") == []
    assert stats.summary(t0 + MIN, 3_600_000, tenant=ALL_TENANTS) == [row]
    # outside the window: the last hour two hours later is empty
    assert stats.summary(t0 + 121 * MIN, 3_600_000) == []
    assert stats.summary(t0 + 121 * MIN, 86_400_000)[0]["completed"] == 2
    assert not stats.events  # every event reached a final state: nothing tracked


def test_stats_forget_buckets_older_than_a_day() -> None:
    stats = StatusStats()
    stats.apply(status("old", "done", 0))
    stats.apply(status("new", "done", 26 * 60 * MIN))
    assert {k[3] for k in stats.buckets} == {26 * 60 * MIN}


def test_a_reset_refills_only_the_buckets_this_worker_owns() -> None:
    r = Rig(PER_USER)
    p = key_partition("u1", r.family.partitions)
    for _ in range(3):
        r.check("u1", partition=p)
    assert r.tokens(b"per_user|k|u1") == pytest.approx(0.0)
    assert r.gate.reset("u1", partitions={p + 1}) == 0  # not ours: untouched
    assert b"per_user|k|u1" in r.store
    assert r.gate.reset("u1", partitions={p}) == 1
    assert b"per_user|k|u1" not in r.store  # a missing bucket is full
    r.check("u1", partition=p)


async def test_reset_command_is_applied_by_the_owner_and_revoked() -> None:
    r = Rig(PER_USER)
    p = key_partition("u1", r.family.partitions)
    r.check("u1", partition=p)
    revoked: list[str] = []

    async def tombstone(key: str) -> None:
        revoked.append(key)

    resets = RateLimitResets(
        gates={"audit": r.gate},
        main_topic={"audit": "audit"},
        assignment=lambda: {TP("audit", p)},
        tombstone=tombstone,
        clock_ms=lambda: 1_000,
    )
    expired = Command(
        kind="ratelimit-reset", target="audit/u1", issued_at_ms=1, expires_at_ms=2, actor="a"
    )
    assert resets.apply(expired) == 0
    live = Command(
        kind="ratelimit-reset", target="audit/u1", issued_at_ms=900, expires_at_ms=5_000, actor="a"
    )
    assert resets.apply(live) == 1
    for task in list(resets._tasks):
        await task
    assert revoked == ["ratelimit-reset/audit/u1"]
