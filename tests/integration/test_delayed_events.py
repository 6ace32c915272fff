"""Delayed one-off events against the real broker and real workers: never run early, held
durably in Kafka (hops on a retry tier) across a SIGKILL and a rebalance, run once when due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine import (
    REPO,
    TEST_AUDIT,
    Ledger,
    audit_rig,
    read_topic,
    record_headers,
    wait_for,
)

from streams.core import headers as h
from streams.errors import InvalidPayload
from streams.settings import Settings

pytestmark = pytest.mark.kafka
SHIFT_PATH = f"{REPO}:{REPO / 'tests' / 'support' / 'clock_shift'}"


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, TEST_AUDIT) as made:
        yield made


def submit(rig: dict[str, Any], subject: str, **delay: Any) -> str:
    res = rig["publisher"].publish(
        "audit.claim_submitted", {"subject_id": subject, "actor_id": "tester"}, **delay
    )
    return str(res.event_id)


def copies(rig: dict[str, Any], event_id: str) -> list[Any]:
    """Every copy of ``event_id`` on the audit family's 2 s tier (where a 1 h delay waits)."""
    s = rig["settings"]
    msgs = read_topic(s, f"{s.topic_prefix}audit.retry.2s", 3)
    return [m for m in msgs if record_headers(m).get(h.EVENT_ID) == event_id]


def test_an_event_5s_ahead_runs_after_5s_never_before(rig: dict[str, Any]) -> None:
    worker = rig["start"]()
    worker.wait_ready()
    before_ms = int(time.time() * 1000)
    eid = submit(rig, "s-5s", delay_s=5)
    now = submit(rig, "s-5s")  # same key, so the same partition, published after it
    ledger: Ledger = rig["ledger"]
    wait_for(lambda: eid in ledger.ids(), 30, "the delayed event to run")
    (run,) = ledger.attempts(eid)
    assert run["due_at_ms"] >= before_ms + 5000
    assert run["at_ms"] >= run["due_at_ms"]  # never before its due time
    (other,) = ledger.attempts(now)
    assert other["at_ms"] < run["due_at_ms"]  # the delayed one blocked nothing behind it


def test_an_event_1h_ahead_survives_sigkill_and_rebalance_then_runs_once(
    rig: dict[str, Any],
) -> None:
    ledger: Ledger = rig["ledger"]
    a = rig["start"]("a")
    a.wait_ready()
    not_before = datetime.now(UTC) + timedelta(hours=1)
    eid = submit(rig, "s-1h", not_before=not_before)
    due_ms = int(h.int_header(record_headers(copies(rig, eid)[0]), h.DUE_AT_MS, -1))
    assert due_ms >= int(not_before.timestamp() * 1000)
    # held durably: worker a keeps re-producing it to the tier (progress, not a sleep)
    wait_for(lambda: len(copies(rig, eid)) >= 3, 30, "the held record to hop twice")
    b = rig["start"]("b")  # rebalance: b joins
    b.wait_ready(90)
    a.kill()  # and the first owner dies without a goodbye
    held = len(copies(rig, eid))
    wait_for(lambda: len(copies(rig, eid)) >= held + 3, 60, "b to hold it after the kill")
    assert eid not in ledger.ids() and not ledger.attempts(eid)  # never ran early
    assert {h.int_header(record_headers(m), h.DUE_AT_MS, -1) for m in copies(rig, eid)} == {
        due_ms
    }  # every copy keeps its due time
    # move the clock, not the wait: a worker whose Python wall clock is 1 h 5 s ahead
    b.stop()
    c = rig["start"]("c", PYTHONPATH=SHIFT_PATH, STREAMS_TEST_CLOCK_SHIFT_S="3605")
    c.wait_ready(90)
    wait_for(lambda: eid in ledger.ids(), 60, "the event to run once its due time passed")
    runs = ledger.attempts(eid)
    assert len(runs) == 1 and runs[0]["at_ms"] >= due_ms
    print(f"\n1 h delayed event: {len(copies(rig, eid))} copies on the tier, ran once")


def test_bad_delays_name_the_field(rig: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="delay_s: must be at most 30 days ahead"):
        submit(rig, "x", delay_s=31 * 86400)
    with pytest.raises(InvalidPayload, match="not_before: must be a time-zone-aware datetime"):
        submit(rig, "x", not_before=datetime(2030, 1, 1))
    with pytest.raises(InvalidPayload, match="give not_before or delay_s, not both"):
        submit(rig, "x", delay_s=5, not_before=datetime.now(UTC))


def test_a_cancelled_delayed_event_never_runs(rig: dict[str, Any]) -> None:
    from tests.support.control import ControlRig

    control = ControlRig(rig["settings"])
    try:
        worker = rig["start"]()
        worker.wait_ready()
        doomed = submit(rig, "s-cancel", delay_s=3)
        control.issue("cancel", doomed)  # while it waits on its tier
        marker = submit(rig, "s-cancel", delay_s=4)  # same key, due later: progress marker
        control.wait_state(doomed, "cancelled", 30)
        control.wait_state(marker, "done", 30)
        ledger: Ledger = rig["ledger"]
        assert not ledger.attempts(doomed), "a cancelled delayed event ran"
        assert marker in ledger.ids()
    finally:
        control.close()
