"""The control plane inside real workers: event status, cancel, pause (real broker, real
worker processes, the SQLite ledger handlers' side effects)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from tests.support.control import ControlRig
from tests.support.engine import TEST_AUDIT, WorkerProcess, audit_rig, wait_for
from tests.support.progress import wait_for_count

from streams.settings import Settings

pytestmark = pytest.mark.kafka

AUDIT = TEST_AUDIT  # retry delays 1s, 2s; three attempts


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, AUDIT) as made:
        control = ControlRig(made["settings"])
        try:
            yield made | {"control": control}
        finally:
            control.close()


def claim(rig: dict[str, Any], **details: str) -> str:
    item = ("audit.claim_submitted", {"subject_id": "c", "actor_id": "t", "details": details})
    return str(rig["publisher"].publish_batch([item])[0].event_id)


def attempts(rig: dict[str, Any], event_id: str) -> int:
    return len(rig["ledger"].attempts(event_id))


def test_status_follows_retrying_to_done_and_to_dead_lettered(rig: dict[str, Any]) -> None:
    control: ControlRig = rig["control"]
    worker: WorkerProcess = rig["start"]()
    worker.wait_ready(60)
    flaky = claim(rig, fail_times="1")
    doomed = claim(rig, fail="always")
    # each transition is visible within ~1 s of the run that caused it
    wait_for_count(lambda: attempts(rig, flaky), 1, 20, "the first run")
    control.wait_state(flaky, "retrying", 1.5, attempt=2)
    wait_for_count(lambda: attempts(rig, flaky), 2, 10, "the retry")
    done = control.wait_state(flaky, "done", 1.5, attempt=2)
    wait_for_count(lambda: attempts(rig, doomed), 3, 20, "the last attempt")
    dead = control.wait_state(doomed, "dead_lettered", 1.5, attempt=3)

    states = [s for s in control.status.states(flaky) if s != "running"]
    assert states == ["retrying", "done"]
    retry = next(r for r in control.status.history[flaky] if r.state == "retrying")
    assert retry.error_class == "streams.errors.Retryable" and retry.due_at_ms
    assert done.at_ms >= retry.at_ms
    assert [s for s in control.status.states(doomed) if s != "running"] == [
        "retrying",
        "retrying",
        "dead_lettered",
    ]
    assert dead.reason == "exhausted" and dead.dlq is not None
    assert dead.dlq.topic.endswith("audit.dlq") and dead.dlq.offset >= 0
    assert dead.family == "audit" and dead.event_type == "audit.claim_submitted"


def test_cancel_of_a_retrying_event_across_a_restart(rig: dict[str, Any]) -> None:
    control: ControlRig = rig["control"]
    worker: WorkerProcess = rig["start"]()
    worker.wait_ready(60)
    doomed = claim(rig, fail="always")
    control.wait_state(doomed, "retrying", 20, attempt=2)
    worker.stop()  # the cancel arrives while no worker runs; the next one must see it
    control.issue("cancel", doomed)
    worker = rig["start"]()
    worker.wait_ready(60)
    control.wait_state(doomed, "cancelled", 20)
    assert attempts(rig, doomed) == 1, "a cancelled event ran again"
    assert worker.metric("streams_events_total", family="audit", outcome="cancelled") == 1
    # it stays cancelled: a later event of the same family runs normally (progress marker)
    later = claim(rig)
    control.wait_state(later, "done", 20)
    assert attempts(rig, doomed) == 1


def paused_at(worker: WorkerProcess, families: list[str]) -> bool:
    return bool(worker.health()[1].get("paused_families") == families)


def test_pause_across_two_workers_and_a_restart(rig: dict[str, Any]) -> None:
    control: ControlRig = rig["control"]
    workers = [rig["start"]("w1"), rig["start"]("w2")]
    for w in workers:
        w.wait_ready(90)
    control.issue("pause", "audit", ttl_ms=None)
    for w in workers:
        wait_for(partial(paused_at, w, ["audit"]), 5, "pause ack")
    ids = [claim(rig, seq=str(i)) for i in range(10)]
    # an absence can only be watched over a window: both workers keep fetching nothing
    time.sleep(2.0)
    assert rig["ledger"].count() == 0, "a paused family ran events"
    workers[0].stop()
    workers[0] = rig["start"]("w1")
    workers[0].wait_ready(90)
    assert workers[0].health("/health/startup")[1]["paused_families"] == ["audit"]
    time.sleep(1.0)
    assert rig["ledger"].count() == 0, "a restarted worker ran a paused family"
    control.revoke("pause", "audit")
    wait_for_count(rig["ledger"].count, len(ids), 30, "the backlog after resume")
    assert rig["ledger"].ids() == set(ids)
    for w in workers:
        wait_for(partial(paused_at, w, []), 5, "resume ack")


def test_cancel_of_a_running_webhook_delivery_stops_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from tests.integration.test_jobs_engine import SECRET, Rig, webhook
    from tests.support.receiver import ThreadedReceiver

    fam = {
        "partitions": 3,
        "concurrency": 4,
        "handler_timeout": "60s",
        "retry": {"delays": ["1s"], "max_attempts": 3, "jitter": 0.0, "retention": "1d"},
    }
    env = {"STREAMS_WEBHOOK_SIGNING_SECRET": SECRET, "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}
    with ThreadedReceiver(SECRET) as receiver:
        rig = Rig(make_settings, tmp_path, "webhook", fam, env)
        control = ControlRig(rig.settings)
        try:
            rig.start()
            held = rig.publisher.publish_batch([webhook(receiver.url + "/slow/45", "s1")])[0]
            # the receiver holds the request: the handler is running
            wait_for(lambda: receiver.deliveries_to("/slow/45"), 20, "the delivery to start")
            control.wait_state(held.event_id, "running", 2)
            control.issue("cancel", held.event_id)
            control.wait_state(held.event_id, "cancelled", 5)  # long before the 45 s reply
            worker = rig.workers[0]
            assert worker.metric("streams_events_total", outcome="cancelled") == 1
            assert worker.metric("streams_retries_total") == 0
            worker.stop()  # restarted, the worker does not deliver it again
            worker = rig.start()
            after = rig.publisher.publish_batch([webhook(receiver.url + "/ok", "s2")])[0]
            control.wait_state(after.event_id, "done", 20)
            assert len(receiver.deliveries_to("/slow/45")) == 1
        finally:
            control.close()
            rig.close()
