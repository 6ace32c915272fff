"""Fault matrix (reliability.md), the broker's rows: on a broker of this module's own.

- the broker SIGKILLed and restarted under load: the SDK and the worker reconnect (the same
  worker process, no restart), no acknowledged event lost;
- the retry produce fails, the worker's path to the broker cut (a TCP proxy) just as a
  handler fails: the source offset is not committed, the event runs again later, once.

Each fault lands at a count of side effects (the SQLite ledger), never after a sleep, and
each test prints the reconciliation (``tests.support.engine.reconcile``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.broker import bootstrap_of, dedicated_broker, kill, proxy_ports
from tests.support.engine import (
    TEST_AUDIT,
    Ledger,
    audit_rig,
    committed_offsets,
    publish_load,
    reconcile,
    wait_for,
)
from tests.support.load import PacedLoad
from tests.support.progress import wait_for_count
from tests.support.proxy import running_proxy

from streams.broker.local import LocalBroker
from streams.settings import Settings
from streams.worker.ratelimit import key_partition

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 1000
KILL_AT = 300  # side effects done when the broker is SIGKILLed
REFUSED_BEFORE_REOPEN = 10  # the worker's reconnect attempts the cut path refuses


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """This module's broker, with a listener behind a proxy (tests/support/broker.py)."""
    with dedicated_broker(tmp_path_factory.mktemp("fault-broker"), proxied=True) as broker:
        yield broker


@pytest.fixture
def rig(
    own_broker: LocalBroker, make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    bootstrap = bootstrap_of(own_broker)

    def on_own_broker(**overrides: Any) -> Settings:
        return make_settings(kafka_bootstrap=bootstrap, **overrides)

    with audit_rig(on_own_broker, tmp_path, TEST_AUDIT) as made:
        yield made


def test_broker_sigkilled_under_load_sdk_and_worker_reconnect_nothing_acked_lost(
    own_broker: LocalBroker, rig: dict[str, Any]
) -> None:
    ledger: Ledger = rig["ledger"]
    worker = rig["start"]("w1", STREAMS_SESSION_TIMEOUT_S="6")
    worker.wait_ready()
    pid = worker.proc.pid if worker.proc else -1
    load = PacedLoad(rig["publisher"], total=EVENTS, ledger_path=rig["ledger_path"], sleep_ms="2")
    load.start()
    try:
        wait_for_count(ledger.count, KILL_AT, 60, f"{KILL_AT} of {EVENTS} side effects")
        acked_at_kill, done_at_kill = load.published, ledger.count()
        kill(own_broker)
        killed = time.monotonic()
        assert acked_at_kill < EVENTS, "the load was published before the kill: proved less"
        assert done_at_kill < EVENTS, "the load was done before the kill: proved less"
        own_broker.start()  # same data dir, same port: the clients' address still holds
        down_s = time.monotonic() - killed
        assert bootstrap_of(own_broker) == rig["settings"].bootstrap
        wait_for(lambda: load.finished, 120, "the load to be published")
        load.check()
        acked = set(load.acked)
        wait_for(lambda: acked <= ledger.ids(), 120, "every acknowledged event done")
    finally:
        load.stop()
    assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
    assert worker.proc.pid == pid  # reconnected, not restarted
    report = reconcile(rig, acked, unacknowledged=load.unacknowledged)
    print(
        f"\nbroker SIGKILL at {done_at_kill}/{EVENTS} done, {acked_at_kill} acked; down "
        f"{down_s:.1f}s; SDK items failed and sent again {load.publish_errors}; {report}"
    )
    assert report["done"] >= EVENTS
    assert report["dlq"] == 0
    assert report["duplicates_dropped_by_peer"] == 0  # no handler crashed mid-effect


def test_retry_produce_cut_off_leaves_the_offset_and_the_event_runs_later_once(
    own_broker: LocalBroker, rig: dict[str, Any], tmp_path: Path
) -> None:
    settings: Settings = rig["settings"]
    ledger: Ledger = rig["ledger"]
    gate = tmp_path / "gate"
    proxy_at, broker_at = proxy_ports(own_broker)
    with running_proxy(proxy_at, broker_at) as proxy:
        worker = rig["start"](
            "w1", STREAMS_KAFKA_BOOTSTRAP=f"127.0.0.1:{proxy_at}", STREAMS_SESSION_TIMEOUT_S="6"
        )
        worker.wait_ready()
        main = f"{settings.topic_prefix}audit"
        at = key_partition("claim-victim", 3)
        first = publish_load(rig["publisher"], 150, keys=30, sleep_ms="2")
        wait_for(lambda: committed_offsets(settings, main, 3)[at] > 0, 60, "a first commit")
        victim = rig["publisher"].publish(
            "audit.claim_submitted",
            {
                "subject_id": "claim-victim",
                "actor_id": "t",
                "details": {"fail_times": "1", "gate": str(gate), "seq": "0"},
            },
        )
        rest = publish_load(rig["publisher"], 150, keys=30, start=150, sleep_ms="2")
        # the victim's handler has started and waits at the gate: cut, then let it fail
        wait_for(lambda: ledger.attempts(victim.event_id), 60, "the victim's first attempt")
        proxy.cut()
        cut = time.monotonic()
        gate.touch()
        wait_for(
            lambda: proxy.refused >= REFUSED_BEFORE_REOPEN, 60, "the worker to try to reconnect"
        )
        retried = worker.metric("streams_events_total", outcome="retried")
        committed = committed_offsets(settings, main, 3)[at]
        assert retried == 0, "the retry record was acknowledged through a cut path"
        assert 0 < committed <= victim.offset, "committed past a record whose retry was not sent"
        assert len(ledger.attempts(victim.event_id)) == 1, "it ran again while cut off"
        proxy.reopen()
        cut_s = time.monotonic() - cut
        produced = [*first, victim.event_id, *rest]
        wait_for(lambda: ledger.count() >= len(produced), 90, "every event done")
        failures = worker.metric("streams_route_failures_total")
        retried_after = worker.metric("streams_events_total", outcome="retried")
        worker.stop()  # while its path is open: a drain that cannot commit waits its deadline
    runs = ledger.attempts(victim.event_id)
    report = reconcile(rig, produced)
    print(
        f"\npath cut {cut_s:.1f}s at the victim's failure: {proxy.refused} reconnects refused,"
        f" {failures:g} route failures; committed {committed} <= victim offset "
        f"{victim.offset}; victim runs {[r['attempt'] for r in runs]}; {report}"
    )
    assert retried_after == 1, "the retry was not sent once the path was back"
    assert victim.event_id in ledger.ids()
    assert [r["attempt"] for r in runs if r["attempt"] > 1] == [2], "the retry ran once"
    assert report["dlq"] == 0 and report["duplicates_dropped_by_peer"] == 0
