"""Run real worker processes against the test broker and reconcile what they did."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition

from streams.broker.admin import apply
from streams.catalog import Catalog, load_catalog, parse_catalog
from streams.core import headers as h
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# A short ladder so tests run in seconds; a 1h tier for the "record waits an hour" case.
TEST_AUDIT = {
    "partitions": 3,
    "concurrency": 16,
    "handler_timeout": "10s",
    "retry": {"delays": ["1s", "2s"], "max_attempts": 3, "jitter": 0.0, "retention": "1d"},
    "rate_limits": [],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_catalog(tmp: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    """topics.yaml reduced to the families in ``overrides``, their entries updated (one
    level deep), so a test provisions only the topics it uses."""
    data = yaml.safe_load((REPO / "topics.yaml").read_text())
    data["families"] = {
        name: {**data["families"][name], **body} for name, body in overrides.items()
    }
    path = tmp / "topics.yaml"
    path.write_text(yaml.safe_dump(data))
    parse_catalog(data, path)  # fail here, clearly, if the override is invalid
    return path


def provision(settings: Settings) -> Catalog:
    catalog = load_catalog(settings.catalog_path)
    apply(settings, catalog)
    return catalog


@dataclass
class WorkerProcess:
    settings: Settings
    families: list[str]
    ledger_path: Path
    log_path: Path
    worker_id: str = "w1"
    extra_env: dict[str, str] = field(default_factory=dict)
    handlers: str = "tests.support.ledger_handlers"
    # the ledger handlers replace the built-in audit job (same event types)
    builtin_jobs: bool = False
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def env(self) -> dict[str, str]:
        s = self.settings
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("STREAMS_") or k == "STREAMS_TEST_LOGLEVEL"
        }
        env.update(
            {
                "STREAMS_KAFKA_BOOTSTRAP": s.bootstrap,
                "STREAMS_TOPIC_PREFIX": s.topic_prefix,
                "STREAMS_APP_ID": s.app_id,
                "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
                "STREAMS_CATALOG_PATH": str(s.catalog_path),
                "STREAMS_HOME": str(s.home),
                "STREAMS_HTTP_PORT": str(self.port),
                "STREAMS_WORKER_ID": self.worker_id,
                "STREAMS_TEST_LEDGER": str(self.ledger_path),
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "streams",
            "worker",
            "--handlers",
            self.handlers,
            "--loglevel",
            os.environ.get("STREAMS_TEST_LOGLEVEL", "info"),
        ]
        if not self.builtin_jobs:
            cmd.append("--no-builtin-jobs")
        for fam in self.families:
            cmd += ["--family", fam]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        return self

    def health(self, path: str = "/health/ready") -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        total = 0.0
        for line in self.metrics().splitlines():
            if (line.startswith(name + "{") and all(p in line for p in want.split(",") if p)) or (
                line.startswith(name + " ") and not labels
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self, timeout_s: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            try:
                status, _ = self.health()
                if status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready within {timeout_s}s:\n{self.tail()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


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
        from tests.support.ledger_handlers import connect

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
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
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


def iter_event_ids(msgs: list[Any]) -> Iterator[str]:
    for msg in msgs:
        yield record_headers(msg).get(h.EVENT_ID, "")


@contextlib.contextmanager
def audit_rig(
    make_settings: Callable[..., Settings], tmp_path: Path, audit: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Topics for an ``audit`` family shaped by ``audit``, a publisher, the SQLite ledger and
    a ``start(worker_id, **env)`` that runs ledger-handler workers (stopped at the end)."""
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
        }
    finally:
        publisher.close()
        for w in workers:
            w.stop()
