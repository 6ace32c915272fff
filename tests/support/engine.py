"""Run real worker processes against the test broker and reconcile what they did."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.broker.admin import apply
from streams.broker.watermarks import watermarks
from streams.catalog import Catalog, load_catalog
from streams.core import headers as h
from streams.settings import Settings
from streams.testing import processes
from streams.testing.processes import write_catalog as write_catalog  # tests import it here

REPO = Path(__file__).resolve().parents[2]

# A short ladder so tests run in seconds; a 1h tier for the "record waits an hour" case.
TEST_AUDIT = {
    "partitions": 3,
    "concurrency": 16,
    "handler_timeout": "10s",
    "retry": {"delays": ["1s", "2s"], "max_attempts": 3, "jitter": 0.0, "retention": "1d"},
    "rate_limits": [],
}


def provision(settings: Settings) -> Catalog:
    catalog = load_catalog(settings.catalog_path)
    apply(settings, catalog)
    return catalog


@dataclass
class WorkerProcess:
    """A ``streams worker`` loading ``handlers`` (the SQLite ledger handlers by default) for
    ``families``, on a free HTTP port; the process itself is ``streams.testing.processes``'."""

    settings: Settings
    families: list[str]
    ledger_path: Path
    log_path: Path
    worker_id: str = "w1"
    extra_env: dict[str, str] = field(default_factory=dict)
    handlers: str = "tests.support.ledger_handlers"
    loglevel: str | None = None  # None: $STREAMS_TEST_LOGLEVEL, else info
    python_args: tuple[str, ...] = ()  # e.g. ("-m", "cProfile", "-o", path) for bench
    process: processes.WorkerProcess | None = None
    # the ledger handlers replace the built-in audit job (same event types)
    builtin_jobs: bool = False
    port: int = 0

    def env(self) -> dict[str, str]:
        inherit = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("STREAMS_") or k == "STREAMS_TEST_LOGLEVEL"
        }
        extra = {
            "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
            "STREAMS_WORKER_ID": self.worker_id,
            "STREAMS_TEST_LEDGER": str(self.ledger_path),
            "PYTHONPATH": str(REPO),
            "STREAMS_SCHEDULES_ENABLED": "0",  # a test that wants the leader turns it on
            **self.extra_env,
        }
        return processes.worker_env(
            self.settings, http_port=self.port, inherit=inherit, extra=extra
        )

    def start(self) -> WorkerProcess:
        self.port = processes.free_port()
        loglevel = self.loglevel or os.environ.get("STREAMS_TEST_LOGLEVEL", "info")
        cmd = processes.worker_command(
            self.families,
            handlers=self.handlers,
            loglevel=loglevel,
            python_args=self.python_args,
            builtin_jobs=self.builtin_jobs,
        )
        self.process = processes.WorkerProcess(
            cmd, self.env(), self.log_path, cwd=REPO, http_port=self.port
        )
        self.process.start()
        return self

    @property
    def started(self) -> processes.WorkerProcess:
        assert self.process is not None, "the worker was not started"
        return self.process

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.process is None else self.process.proc

    def health(self, path: str = "/health/ready") -> tuple[int, dict[str, Any]]:
        return self.started.health(path)

    def metrics(self) -> str:
        return self.started.metrics()

    def metric(self, name: str, **labels: str) -> float:
        return self.started.metric(name, **labels)

    def wait_ready(self, timeout_s: float = 60) -> float:
        try:
            return self.started.wait_healthy(timeout_s, interval_s=0.2)
        except processes.NotReady as exc:
            if exc.exit_code is not None:
                raise AssertionError(f"worker exited {exc.exit_code}:\n{self.tail()}") from None
            raise AssertionError(f"worker not ready within {timeout_s}s:\n{self.tail()}") from None

    def signal(self, sig: int) -> None:
        self.started.signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout_s: float) -> int:
        return self.started.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a graceful drain), SIGKILL after ``timeout_s``."""
        if self.process is not None:
            self.process.stop(timeout_s)

    def tail(self, lines: int = 60) -> str:
        return self.process.tail(lines) if self.process is not None else ""


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Ledger:
    def __init__(self, path: Path) -> None:
        from tests.support.ledger_db import connect

        self.conn = connect(str(path))

    def ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT event_id FROM ledger")}

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM ledger").fetchone()[0])

    def attempts(self, event_id: str | None = None) -> list[sqlite3.Row]:
        self.conn.row_factory = sqlite3.Row
        if event_id is None:
            rows = self.conn.execute("SELECT * FROM attempts ORDER BY at_ms").fetchall()
        else:
            rows = self.conn.execute(
                "SELECT * FROM attempts WHERE event_id = ? ORDER BY at_ms", (event_id,)
            ).fetchall()
        self.conn.row_factory = None
        return list(rows)

    def duplicates(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM duplicates").fetchone()[0])


def committed_offsets(settings: Settings, topic: str, partitions: int) -> dict[int, int]:
    """The group's (``settings.app_id``) committed offset of each partition of ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": settings.app_id,
            "enable.auto.commit": False,
        }
    )
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def read_topic(
    settings: Settings, topic: str, partitions: int, timeout_s: float = 5.0
) -> list[Any]:
    """Every record of ``topic`` (assign, no group), with decoded headers."""
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        ends = {}
        for p in range(partitions):
            # a topic a worker just created may still be electing its leaders
            _, high = watermarks(consumer, TopicPartition(topic, p), max(timeout_s, 30.0))
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[Any] = []
        want = sum(ends.values())
        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    out.append(msg)
        return out
    finally:
        consumer.close()


def record_headers(msg: Any) -> dict[str, str]:
    return h.decode(msg.headers() or [])


def publish_load(publisher: Any, n: int, keys: int, *, start: int = 0, **details: str) -> list[str]:
    """Publish ``n`` audit claims over ``keys`` subjects, ``seq`` counting up from ``start``
    (a later call continues the per-key order of an earlier one); their ids."""
    items = [
        (
            "audit.claim_submitted",
            {
                "subject_id": f"claim-{i % keys}",
                "actor_id": "load",
                "details": {**details, "seq": str(i)},
            },
        )
        for i in range(start, start + n)
    ]
    return [r.event_id for r in publisher.publish_batch(items)]


# what every DLQ record must say about its failure (reliability.md)
DLQ_FAILURE_HEADERS = (h.DLQ_REASON, h.ERROR_CLASS, h.ORIGINAL_TOPIC, h.FAILED_AT_MS)


def reconcile(
    rig: dict[str, Any],
    produced: Collection[str],
    *,
    unacknowledged: Collection[str] = (),
    check_order: bool = True,
) -> dict[str, Any]:
    """reliability.md's reconciliation; returns the counts a test prints.

    ``produced`` (acknowledged by the broker) must each be done or dead-lettered, never
    both; ``unacknowledged`` ids (a publish that raised) may be either or absent, nothing
    else may appear. Every DLQ record carries its failure headers; per-key order held for
    done events. A *redelivery* is a handler run beyond the first of an (event, attempt);
    ``duplicates_dropped_by_peer`` counts runs that reached the side effect again and were
    dropped by the ledger's UNIQUE id.
    """
    settings: Settings = rig["settings"]
    ledger: Ledger = rig["ledger"]
    done = ledger.ids()
    partitions = rig["catalog"].family("audit").partitions
    dead = read_topic(settings, f"{settings.topic_prefix}audit.dlq", partitions)
    dlq_headers = [record_headers(m) for m in dead]
    dlq = {d.get(h.EVENT_ID, "") for d in dlq_headers}
    required = set(produced)
    missing = required - done - dlq
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}"
    unknown = (done | dlq) - required - set(unacknowledged)
    assert not unknown, f"{len(unknown)} unknown events done or dead-lettered"
    assert not done & dlq, "an event both done and dead-lettered"
    twice = sorted(
        eid for eid, n in Counter(d.get(h.EVENT_ID, "") for d in dlq_headers).items() if n > 1
    )
    assert not twice, f"{len(twice)} events dead-lettered more than once, e.g. {twice[:3]}"
    for headers in dlq_headers:
        absent = [name for name in DLQ_FAILURE_HEADERS if not headers.get(name)]
        assert not absent, f"a DLQ record lacks {absent}: {headers}"
    if check_order:  # per-key order on the main topic held for successful events
        rows = ledger.conn.execute("SELECT subject_id, seq FROM ledger ORDER BY rowid")
        by_key: dict[str, list[int]] = defaultdict(list)
        for subject, seq in rows.fetchall():
            by_key[subject].append(seq)
        for subject, seqs in by_key.items():
            assert seqs == sorted(seqs), f"order broken for {subject}"
    runs = ledger.attempts()
    distinct_runs = {(r["event_id"], r["attempt"]) for r in runs}
    return {
        "produced": len(required),
        "done": len(done),
        "dlq": len(dlq),
        "dlq_reasons": dict(Counter(d.get(h.DLQ_REASON, "") for d in dlq_headers)),
        "handler_runs": len(runs),
        "retries": sum(1 for _, attempt in distinct_runs if attempt > 1),
        "redeliveries": len(runs) - len(distinct_runs),
        "duplicates_dropped_by_peer": ledger.duplicates(),
    }


def iter_event_ids(msgs: list[Any]) -> Iterator[str]:
    for msg in msgs:
        yield record_headers(msg).get(h.EVENT_ID, "")


@contextlib.contextmanager
def audit_rig(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    audit: dict[str, Any],
    *,
    handlers: str = "tests.support.ledger_handlers",
) -> Iterator[dict[str, Any]]:
    """Topics for an ``audit`` family shaped by ``audit``, a publisher, the SQLite ledger and
    a ``start(worker_id, **env)`` that runs workers loading ``handlers`` (the ledger
    handlers; stopped at the end)."""
    from streams.publish.publisher import Publisher

    settings = make_settings(catalog_path=write_catalog(tmp_path, {"audit": audit}))
    catalog = provision(settings)
    ledger_path = tmp_path / "ledger.db"
    workers: list[WorkerProcess] = []

    def start(worker_id: str = "w1", **env: str) -> WorkerProcess:
        w = WorkerProcess(
            settings,
            ["audit"],
            ledger_path,
            tmp_path / f"{worker_id}.log",
            worker_id=worker_id,
            extra_env=env,
            handlers=handlers,
        )
        workers.append(w.start())
        return w

    publisher = Publisher(settings, catalog=catalog)
    try:
        yield {
            "settings": settings,
            "catalog": catalog,
            "start": start,
            "publisher": publisher,
            "ledger": Ledger(ledger_path),
            "ledger_path": ledger_path,
        }
    finally:
        publisher.close()
        for w in workers:
            w.stop()
