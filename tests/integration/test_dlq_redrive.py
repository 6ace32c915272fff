"""Acceptance of issue 15: redrive webhook events from the DLQ through a real worker.

Real broker, a real worker process running the built-in webhook job, the real webhook
receiver (``streams.testing``) whose deliveries are counted by ``Idempotency-Key``. Faults
are triggered by progress: the receiver's script flips after N calls, the redrive CLI is
SIGKILLed once N replays are on the main topic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tests.support.engine import REPO, WorkerProcess, provision, wait_for, write_catalog
from tests.support.receiver import ThreadedReceiver

from streams.cli import cli
from streams.core.topology import dlq_topic, main_topic
from streams.dlq.reader import DlqReader
from streams.dlq.records import DlqRecord
from streams.dlq.replay import REPLAY_COUNT, REPLAY_ID, REPLAY_SOURCE, replayed_name
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.kafka

SECRET = "redrive-signing-secret"
HOOK = "/hooks/partner"
FAMILY = {
    "partitions": 3,
    "concurrency": 32,
    "handler_timeout": "5s",
    # one attempt: a 500 goes straight to the DLQ, so the scenario runs in seconds
    "retry": {"delays": ["1s"], "max_attempts": 1, "jitter": 0.0, "retention": "1d"},
    "rate_limits": [],
    "circuit_breaker": {"failure_threshold": 1_000_000, "cooldown": "1s"},
}


class Rig:
    def __init__(self, settings: Settings, receiver: WebhookReceiver, tmp: Path) -> None:
        self.settings = settings
        self.catalog = provision(settings)
        self.receiver = receiver
        self.tmp = tmp
        self.main = main_topic(settings.topic_prefix, "webhook")
        self.dlq = dlq_topic(settings.topic_prefix, "webhook")
        self.env = {
            "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
            "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
            "STREAMS_APP_ID": settings.app_id,
            "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
            "STREAMS_HOME": str(settings.home),
            "STREAMS_CATALOG_PATH": str(settings.catalog_path),
        }
        self.worker = WorkerProcess(
            settings,
            ["webhook"],
            tmp / "unused.db",
            tmp / "worker.log",
            extra_env={
                "STREAMS_WEBHOOK_SIGNING_SECRET": SECRET,
                "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            },
            handlers="streams.jobs.registry",
            builtin_jobs=True,
        )

    def publish(self, n: int) -> list[str]:
        with Publisher(self.settings, catalog=self.catalog) as publisher:
            items = [
                (
                    "webhook.requested",
                    {
                        "subscription_id": f"sub-{i % 7}",
                        "url": self.receiver.url + HOOK,
                        "event_name": "claim.approved",
                        "body": json.dumps({"claim": i}),
                    },
                )
                for i in range(n)
            ]
            return [r.event_id for r in publisher.publish_batch(items)]

    def records(self, topic: str) -> list[DlqRecord]:
        with DlqReader(self.settings, topic) as reader:
            return list(reader.scan())

    def count(self, topic: str) -> int:
        with DlqReader(self.settings, topic) as reader:
            return sum(r.count for r in reader.partitions())

    def replays(self, redrive_id: str | None = None) -> list[DlqRecord]:
        return [
            r
            for r in self.records(self.main)
            if r.headers.get(REPLAY_ID) and redrive_id in (None, r.headers.get(REPLAY_ID))
        ]

    def ok_keys(self) -> Counter[str]:
        return Counter(
            d.header("Idempotency-Key") or "?"
            for d in self.receiver.deliveries_to(HOOK)
            if d.status == 200
        )

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["dlq", *args], env=self.env, catch_exceptions=False)

    def cli_json(self, *args: str, code: int = 0) -> dict[str, Any]:
        result = self.cli(*args, "--json")
        assert result.exit_code == code, result.output
        body: dict[str, Any] = json.loads(result.stdout)
        return body

    def dead_letter(self, n: int) -> list[str]:
        """``n`` events that fail (500) and land in the DLQ."""
        self.receiver.script(HOOK, [500])
        ids = self.publish(n)
        wait_for(lambda: self.count(self.dlq) >= n, 60, f"{n} DLQ records")
        return ids


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Rig]:
    catalog = write_catalog(tmp_path, {"webhook": FAMILY, "audit": {"partitions": 1}})
    settings = make_settings(catalog_path=catalog)
    with ThreadedReceiver(SECRET) as receiver:
        r = Rig(settings, receiver, tmp_path)
        r.worker.start()
        r.worker.wait_ready(90)
        try:
            yield r
        finally:
            r.worker.stop()


def _never_faster(stamps_ms: list[int], rate_per_s: float) -> None:
    """In every window of replays, count - 1 <= rate * span (ms timestamps: +1 ms slack)."""
    stamps = sorted(stamps_ms)
    for i in range(len(stamps)):
        for j in range(i + 1, min(len(stamps), i + 400)):
            span_s = (stamps[j] - stamps[i] + 1) / 1000
            assert j - i <= rate_per_s * span_s + 1, (i, j, stamps[i], stamps[j])


def test_dry_run_then_rate_limited_redrive_delivers_each_once(rig: Rig) -> None:
    ids = rig.dead_letter(1000)
    before = rig.count(rig.main)
    rig.receiver.script(HOOK, [200])  # the partner is fixed
    rig.receiver.clear()

    plan = rig.cli_json("redrive", "webhook", "--dry-run")
    assert plan["dry_run"] and plan["sent"] == 1000 and plan["matched"] == 1000
    assert plan["by_event_type"] == {"webhook.requested": 1000}
    assert plan["first"] and plan["last"]
    assert rig.count(rig.main) == before, "the dry run sent something"

    report = rig.cli_json("redrive", "webhook", "--rate", "200/s")
    assert report["state"] == "done" and report["sent"] == 1000
    wait_for(lambda: len(rig.ok_keys()) >= 1000, 60, "1000 deliveries")
    keys = rig.ok_keys()
    assert set(keys) == set(ids) and set(keys.values()) == {1}

    replays = rig.replays(report["redrive_id"])
    assert len(replays) == 1000
    assert len({r.headers[REPLAY_SOURCE] for r in replays}) == 1000
    _never_faster([r.timestamp_ms or 0 for r in replays], 200)
    sample = replays[0]
    original = {r.position: r for r in rig.records(rig.dlq)}[
        sample.headers[REPLAY_SOURCE].rsplit("/", 1)[1]
    ]
    assert (sample.key, sample.value) == (original.key, original.value)  # byte-exact
    assert sample.partition == original.original_partition
    assert sample.headers[REPLAY_COUNT] == "1" and "streams-attempt" not in sample.headers
    assert sample.headers[replayed_name("streams-error-class")] == original.error_class

    # the same redrive again: the idempotency ledger skips them all, no new side effect
    again = rig.cli_json("redrive", "webhook")
    assert again["sent"] == 1000
    wait_for(lambda: len(rig.replays(again["redrive_id"])) == 1000, 30, "the second run's replays")
    wait_for(
        lambda: rig.worker.metric("streams_duplicates_skipped_total") >= 1000,
        60,
        "the worker to skip the 1000 duplicates",
    )
    assert rig.ok_keys() == keys
    audits = rig.records(rig.settings.topic_prefix + "audit")
    assert len(audits) == 3  # the dry run and both redrives
    assert {a.event_type for a in audits} == {"audit.admin_action"}


def test_canary_stops_on_renewed_failure_then_parking(rig: Rig) -> None:
    rig.dead_letter(30)  # the receiver stays broken
    result = rig.cli("redrive", "webhook", "--canary", "10", "--outcome-timeout", "60")
    assert result.exit_code == 3, result.output
    assert "canary: 10 of 10 canary records failed again" in result.output
    assert "--resume" in result.output
    assert len(rig.replays()) == 10
    wait_for(lambda: rig.count(rig.dlq) >= 40, 30, "the canaries back in the DLQ")

    # --max-replays 1: the 10 canaries came back once (their new copies are parked, the
    # originals superseded); the 20 others are sent
    report = rig.cli_json("redrive", "webhook", "--max-replays", "1")
    assert (report["sent"], report["parked"]) == (20, 10)
    assert report["skipped"] == {"superseded": 10}
    wait_for(lambda: rig.count(rig.dlq) >= 60, 30, "the 20 back in the DLQ")
    final = rig.cli_json("redrive", "webhook", "--max-replays", "1")
    assert (final["sent"], final["parked"]) == (0, 20)
    assert final["skipped"] == {"superseded": 30, "parked": 10}
    assert len(rig.replays()) == 30  # nothing looped


def test_max_failure_rate_stops_a_run_that_starts_failing(rig: Rig) -> None:
    rig.dead_letter(300)
    rig.receiver.script(HOOK, [200] * 100 + [500])  # fixed... then failing again
    rig.receiver.clear()
    result = rig.cli("redrive", "webhook", "--rate", "50/s", "--max-failure-rate", "0.2", "--json")
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert report["state"] == "stopped" and "--max-failure-rate 0.2" in report["outcome"]
    assert 100 < report["sent"] < 300
    assert report["outcomes"]["failed"] > 0


def test_killed_redrive_resumes_without_sending_twice(rig: Rig) -> None:
    ids = rig.dead_letter(600)
    rig.receiver.script(HOOK, [200])
    rig.receiver.clear()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}, **rig.env}
    env["PYTHONPATH"] = str(REPO / "src")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "dlq", "redrive", "webhook", "--rate", "100/s"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        first, seen = "", []
        while not first.startswith("redrive "):
            line = proc.stderr.readline().decode()
            assert line, f"the redrive exited before it started: {seen}"
            first = line
            seen.append(line)
        redrive_id = first.split()[1]
        assert redrive_id.startswith("rd-"), first
        wait_for(lambda: len(rig.replays(redrive_id)) >= 250, 60, "250 replays before the kill")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    sent_before_kill = len(rig.replays(redrive_id))
    assert sent_before_kill < 600

    busy = rig.cli("redrive", "webhook", "--resume", redrive_id)
    assert busy.exit_code == 1 and "may still be running" in busy.output  # recent checkpoint
    report = rig.cli_json("redrive", "webhook", "--resume", redrive_id, "--force")  # it is dead
    assert report["state"] == "done"
    assert report["sent"] == 600 - sent_before_kill, report
    sources = Counter(r.headers[REPLAY_SOURCE] for r in rig.replays(redrive_id))
    assert len(sources) == 600 and set(sources.values()) == {1}  # none twice
    wait_for(lambda: len(rig.ok_keys()) >= 600, 60, "600 deliveries")
    keys = rig.ok_keys()
    assert set(keys) == set(ids) and set(keys.values()) == {1}

    # resuming a finished redrive sends nothing more
    done = rig.cli_json("redrive", "webhook", "--resume", redrive_id)
    assert done["sent"] == 0
    assert len(rig.replays(redrive_id)) == 600
