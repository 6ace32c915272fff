"""P16: push deliveries per second through one worker (seed 001's floor: 500 per minute).

Each run provisions ``push`` and ``consent`` families of its own (the run's partition
count, catalog concurrency 32, no rate limit: the 20/h/user limit would measure the
limit, not the job), starts one worker with the built-in jobs and the local
OneSignal-shaped provider (``streams.testing.push_provider``) in this process, and
publishes ``min(N, 2000)`` transactional pushes to distinct users with one encrypted
device token each. The rate runs from the first publish to the provider's last recorded
delivery; worker start-up is not timed. Quiet hours are off.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.support.engine import WorkerProcess

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

MAX_PUSHES = 2000
FLOOR_PER_MIN = 500.0
RUN_TIMEOUT_S = 300.0
KEYS = "bench=" + base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class _State:
    dir: Path
    pushes: int
    runs: int = 0


def setup(ctx: BenchContext) -> _State:
    return _State(Path(tempfile.mkdtemp(prefix="streams-bench-p12-")), min(ctx.events, MAX_PUSHES))


def _provision(ctx: BenchContext, state: _State) -> Any:
    from streams.broker.admin import apply, catalog_topics
    from streams.catalog import load_catalog
    from streams.settings import Settings

    state.runs += 1
    run_dir = state.dir / f"run-{state.runs}"
    run_dir.mkdir()
    data = yaml.safe_load((eng.REPO / "topics.yaml").read_text())
    fams = data["families"]
    data["families"] = {
        "push": {**fams["push"], "partitions": ctx.partitions, "rate_limits": []},
        "consent": {**fams["consent"], "partitions": ctx.partitions},
    }
    catalog_path = run_dir / "topics.yaml"
    catalog_path.write_text(yaml.safe_dump(data))
    settings = Settings(
        kafka_bootstrap=ctx.bootstrap,
        topic_prefix=f"{ctx.settings.topic_prefix}push{state.runs}.",
        app_id=f"{ctx.settings.app_id}-push-{state.runs}",
        replication_factor_override=1,
        catalog_path=catalog_path,
        home=run_dir / "home",
    )
    catalog = load_catalog(catalog_path)
    apply(settings, catalog)
    ctx.created_topics += [s.name for s in catalog_topics(settings, catalog)]
    return settings, catalog, run_dir


def _publisher(settings: Any, catalog: Any) -> Any:
    from streams import Publisher

    os.environ["STREAMS_ENCRYPTION_KEYS"] = KEYS
    try:
        return Publisher(settings, catalog=catalog, producer_name="bench")
    finally:
        del os.environ["STREAMS_ENCRYPTION_KEYS"]


def run(ctx: BenchContext, state: _State) -> Sample:
    from streams.testing.push_provider import ThreadedPushProvider

    settings, catalog, run_dir = _provision(ctx, state)
    with ThreadedPushProvider() as provider:
        env = {
            "STREAMS_PUSH_API_URL": provider.url,
            "STREAMS_PUSH_QUIET_HOURS": "",
            "STREAMS_ENCRYPTION_KEYS": KEYS,
        }
        worker = WorkerProcess(
            settings,
            ["push", "consent"],
            run_dir / "unused.db",
            run_dir / "worker.log",
            extra_env=env,
            handlers="streams.jobs.registry",
            builtin_jobs=True,
        )
        worker.start()
        publisher = _publisher(settings, catalog)
        try:
            worker.wait_ready(eng.WORKER_READY_TIMEOUT_S)
            items = [
                (
                    "push.requested",
                    {
                        "user_id": f"user-{i}",
                        "title": "Order ${order}",
                        "body": "shipped",
                        "device_ids": [f"device-token-{i:06d}"],
                        "variables": {"order": str(i)},
                    },
                )
                for i in range(state.pushes)
            ]
            started = time.monotonic()
            publisher.publish_batch(items)
            while len(provider.deliveries) < state.pushes:
                if time.monotonic() - started > RUN_TIMEOUT_S:
                    raise RuntimeError(
                        f"P16: {len(provider.deliveries)} of {state.pushes} "
                        f"pushes within {RUN_TIMEOUT_S:.0f}s"
                    )
                time.sleep(0.05)
            elapsed_s = time.monotonic() - started
        finally:
            publisher.close()
            worker.stop()
    per_s = state.pushes / elapsed_s
    return Sample(per_s, {"elapsed_s": elapsed_s, "pushes": state.pushes, "per_min": per_s * 60})


def teardown(state: _State) -> None:
    return None


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.median * 60 >= FLOOR_PER_MIN


def _note(summary: Summary) -> str:
    per_min = summary.detail("per_min")
    pushes = summary.samples[0].details.get("pushes", MAX_PUSHES)
    return (
        f"{pushes:.0f} pushes per run (one encrypted token each) to the local provider; "
        f"median {per_min[0]:,.0f}/min (floor {FLOOR_PER_MIN:.0f}/min)"
    )


CASE = Case(
    id="P16",
    title="push deliveries (consent, personalise, encrypted token, provider POST)",
    unit="pushes/s",
    target=f">= {FLOOR_PER_MIN / 60:.1f}/s ({FLOOR_PER_MIN:.0f}/min)",
    setup=setup,
    run=run,
    teardown=teardown,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 32, 32 provider connections",
)
