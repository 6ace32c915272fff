"""Shared support for the cases that run real ``streams worker`` processes (F0, P1-P4, P6-P8).

- ``BenchFamily``: the ``audit`` family under a case's own topic prefix, from a catalog that
  holds only that family with the case's overrides (partitions, concurrency, retry ladder,
  idempotency), provisioned with ``streams.broker.admin.apply`` once per worker run (a fresh
  app id = a fresh consumer group and fresh, empty idempotency changelogs, so every run
  drains the same pre-loaded records from the beginning). Every topic it creates is deleted
  when the bench run ends.
- ``preload``: N ``audit.claim_submitted`` events (values padded to the run's payload size)
  published once per topic prefix with the SDK, before any timing.
- ``run_worker``: a worker subprocess (``tests.support.engine.WorkerProcess``) loading
  ``bench.handlers``; waits for the handler's record (see bench/handlers.py) and stops it.
- ``shared_pipe``: the pre-loaded topic that F0, P1 and P6 read, so the framework's ceiling
  and the engine are measured over the very same records.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.support.engine import WorkerProcess, free_port

from bench.harness import BenchContext

REPO = Path(__file__).resolve().parents[2]
FAMILY = "audit"
EVENT_TYPE = "audit.claim_submitted"
PRELOAD_CHUNK = 5000
WORKER_READY_TIMEOUT_S = 90.0

# The happy-path layout: the run's partition count, 64 in flight, no rate limits.
PIPE_AUDIT: dict[str, Any] = {
    "concurrency": 64,
    "handler_timeout": "10s",
    "rate_limits": [],
    "retry": {"delays": ["1s", "10s", "1m"], "max_attempts": 4, "jitter": 0.0, "retention": "1d"},
}

_ROOT = Path(tempfile.mkdtemp(prefix="streams-bench-"))
if os.environ.get("BENCH_KEEP") == "1":  # keep catalogs, worker logs and records
    atexit.register(print, f"bench: worker logs and records kept in {_ROOT}", file=sys.stderr)
else:
    atexit.register(shutil.rmtree, _ROOT, True)
_preloaded: dict[str, int] = {}
_families: dict[str, BenchFamily] = {}
# Figures one case measured that a later case of the same run uses (P3 runs at half of P1).
measured: dict[str, list[float]] = {}


def write_catalog(path: Path, body: Mapping[str, Any]) -> Path:
    """topics.yaml with the repo's defaults and only the ``audit`` family (overridden)."""
    from streams.catalog import parse_catalog

    data = yaml.safe_load((REPO / "topics.yaml").read_text(encoding="utf-8"))
    family = {**data["families"][FAMILY], **body}
    doc = {"version": data["version"], "defaults": data["defaults"], "families": {FAMILY: family}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    parse_catalog(doc, path)  # fail here, clearly, if the override is invalid
    return path


@dataclass
class BenchFamily:
    """The audit family of one case: its prefix, its catalog, its worker runs."""

    ctx: BenchContext
    tag: str  # e.g. "pipe": topics are <run prefix><tag>.audit...
    body: dict[str, Any]
    variant: str = "default"
    runs: int = 0
    dir: Path = field(init=False)
    catalog_path: Path = field(init=False)
    catalog: Any = field(init=False)

    def __post_init__(self) -> None:
        from streams.catalog import load_catalog

        self.body = {"partitions": self.ctx.partitions, **self.body}
        self.dir = _ROOT / f"{self.tag}-{self.variant}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.catalog_path = write_catalog(self.dir / "topics.yaml", self.body)
        self.catalog = load_catalog(self.catalog_path)

    @property
    def prefix(self) -> str:
        return f"{self.ctx.settings.topic_prefix}{self.tag}."

    @property
    def main_topic(self) -> str:
        return f"{self.prefix}{FAMILY}"

    def settings(self, app_id: str | None = None) -> Any:
        from streams.settings import Settings

        return Settings(
            kafka_bootstrap=self.ctx.bootstrap,
            topic_prefix=self.prefix,
            app_id=app_id or f"{self.ctx.settings.app_id}-{self.tag}",
            replication_factor_override=1,
            catalog_path=self.catalog_path,
            home=self.dir / "home",
        )

    def provision(self, app_id: str | None = None) -> Any:
        """Apply the catalog (topics for ``app_id``); returns the settings to run with."""
        from streams.broker.admin import apply, catalog_topics

        settings = self.settings(app_id)
        apply(settings, self.catalog)
        for spec in catalog_topics(settings, self.catalog):
            if spec.name not in self.ctx.created_topics:
                self.ctx.created_topics.append(spec.name)
        return settings

    def next_app_id(self, label: str = "") -> str:
        self.runs += 1
        return f"{self.ctx.settings.app_id}-{self.tag}-{self.variant}{label}-{self.runs}"

    def publisher(self) -> Any:
        from streams import Publisher

        return Publisher(self.settings(), catalog=self.catalog, producer_name="bench")

    def out_path(self, name: str) -> Path:
        path = self.dir / f"{name}.json"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return path


def family(
    ctx: BenchContext, tag: str, body: Mapping[str, Any], variant: str = "default"
) -> BenchFamily:
    """One BenchFamily per (tag, variant) in this process."""
    key = f"{ctx.run_id}/{tag}/{variant}"
    if key not in _families:
        _families[key] = BenchFamily(ctx, tag, dict(body), variant)
    return _families[key]


def payload(i: int, keys: int, pad: str, **details: str) -> dict[str, Any]:
    return {
        "subject_id": f"subject-{i % keys:08d}",
        "actor_id": "bench",
        "details": {"seq": str(i), "pad": pad, **details},
    }


def pad_for(publisher: Any, target_bytes: int, keys: int, **details: str) -> str:
    """The padding that makes the encoded value ``target_bytes`` (or just above)."""
    size = len(publisher.prepare(EVENT_TYPE, payload(0, keys, "", **details)).value)
    return "x" * max(0, target_bytes - size)


def preload(fam: BenchFamily, count: int, keys: int, **details: str) -> int:
    """Publish ``count`` events to the family's main topic once per prefix; returns the
    encoded value size."""
    if fam.prefix in _preloaded:
        return _preloaded[fam.prefix]
    fam.provision()
    publisher = fam.publisher()
    try:
        pad = pad_for(publisher, fam.ctx.payload_bytes, keys, **details)
        size = len(publisher.prepare(EVENT_TYPE, payload(0, keys, pad, **details)).value)
        for start in range(0, count, PRELOAD_CHUNK):
            items = [
                (EVENT_TYPE, payload(i, keys, pad, **details))
                for i in range(start, min(count, start + PRELOAD_CHUNK))
            ]
            publisher.publish_batch(items, timeout_s=120)
    finally:
        publisher.close(10)
    _preloaded[fam.prefix] = size
    return size


def shared_pipe(ctx: BenchContext, variant: str = "default", **body: Any) -> BenchFamily:
    """The ``pipe`` family (PIPE_AUDIT, + ``body``) with ctx.events distinct-key events."""
    fam = family(ctx, "pipe", {**PIPE_AUDIT, **body}, variant)
    preload(fam, ctx.events, keys=ctx.events)
    return fam


# --- worker processes -------------------------------------------------------------------


# passed from the bench's environment to its workers (WorkerProcess passes no STREAMS_*)
PASSED_SETTINGS = ("STREAMS_FETCH_MAX_WAIT_MS", "STREAMS_LEDGER_LINGER_MS")


class BenchWorker(WorkerProcess):
    """WorkerProcess with optional interpreter arguments (e.g. ``-m cProfile -o f``)."""

    python_args: tuple[str, ...] = ()

    def start(self) -> BenchWorker:
        self.port = free_port()
        cmd = [
            sys.executable,
            *self.python_args,
            "-m",
            "streams",
            "worker",
            "--handlers",
            self.handlers,
            "--loglevel",
            "warning",
        ]
        if not self.builtin_jobs:
            cmd.append("--no-builtin-jobs")
        for name in self.families:
            cmd += ["--family", name]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        return self


def worker_process(
    fam: BenchFamily,
    settings: Any,
    env: Mapping[str, str],
    name: str,
    worker_id: str = "w1",
    python_args: tuple[str, ...] = (),
) -> BenchWorker:
    """A started ``streams worker --handlers bench.handlers --family audit`` subprocess.

    With ``BENCH_PROFILE=<dir>`` the worker runs under cProfile (``python -m cProfile -o
    <dir>/<name>.prof``; slower, only for finding where the time goes).
    """
    profile_dir = os.environ.get("BENCH_PROFILE", "")
    if profile_dir and not python_args:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        python_args = ("-m", "cProfile", "-o", str(Path(profile_dir) / f"{name}.prof"))
        print(f"[profile] {Path(profile_dir) / f'{name}.prof'}", file=sys.stderr)
    extra_env = dict(env)
    for setting in PASSED_SETTINGS:  # engine settings a bench run may vary
        if setting in os.environ:
            extra_env.setdefault(setting, os.environ[setting])
    worker = BenchWorker(
        settings,
        [FAMILY],
        fam.dir / f"{name}.ledger.db",
        fam.dir / f"{name}.log",
        worker_id=worker_id,
        extra_env=extra_env,
        handlers="bench.handlers",
    )
    worker.python_args = python_args
    return worker.start()


def wait_record(path: Path, worker: Any, timeout_s: float, what: str) -> dict[str, Any]:
    """The handler's JSON record, once written; RuntimeError if the worker dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        proc = worker.proc
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: worker exited {proc.returncode}:\n{worker.tail()}")
        time.sleep(0.02)
    counts = ""
    with contextlib.suppress(Exception):
        counts = " ".join(
            f"{o}={worker.metric('streams_events_total', outcome=o):.0f}"
            for o in ("done", "retried", "deferred", "dead_lettered", "duplicate")
        )
    raise RuntimeError(f"{what}: no result within {timeout_s:.0f}s ({counts}):\n{worker.tail()}")


def outcomes(worker: Any) -> dict[str, float]:
    """streams_events_total by outcome (for checks: no DLQ, no duplicates)."""
    return {
        o: worker.metric("streams_events_total", outcome=o)
        for o in ("done", "retried", "deferred", "dead_lettered", "duplicate")
    }


def stop(worker: Any, timeout_s: float = 20.0) -> None:
    """SIGTERM (graceful drain), SIGKILL after ``timeout_s``."""
    proc = worker.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` now (from /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def http_json(url: str, timeout_s: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read() or b"{}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def cpu_us_per_event(record: Mapping[str, Any]) -> float:
    """Process CPU time per event between the first and last event, in microseconds: on a
    shared, noisy machine this moves much less than the rate does."""
    cpu_s = float(record["last_cpu_s"]) - float(record["first_cpu_s"])
    return cpu_s / max(1, int(record["calls"])) * 1e6


def drain_rate(record: Mapping[str, Any]) -> tuple[float, float, float]:
    """(events/s, elapsed s, worker CPU share) from a handler or F0 record."""
    elapsed_s = max(1e-9, float(record["last_s"]) - float(record["first_s"]))
    cpu_s = float(record["last_cpu_s"]) - float(record["first_cpu_s"])
    return float(record["calls"]) / elapsed_s, elapsed_s, cpu_s / elapsed_s
