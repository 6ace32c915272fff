"""P15: payments per second through one worker against the local provider at its limit.

Each run provisions ``payment`` and ``audit`` families of their own (the run's partition
count, a prefix per run), starts the Stripe-shaped provider (``streams.testing.
payment_provider``) in this process with a rate limit of its own equal to the catalog's
provider bucket (100/s: the provider answers 429 above it), starts one worker with the
payment job and publishes ``min(N, 2000)`` ``payment.requested`` events (no receipt
email). Each is one PaymentIntent with an Idempotency-Key, then the ``payment.captured``
event it publishes runs through the same family (and the same bucket). The rate runs from
the first publish to the last charge at the provider; worker start-up is not timed.
Seed 001's floor is 100 payments per minute; the ceiling is the provider's limit. The
captures take tokens of the same bucket but queue behind the charges on each partition,
so under a burst the charges run at the full limit and the captures drain after them.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.support.engine import WorkerProcess
from tests.support.money import API_KEY, ThreadedProvider

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

MAX_PAYMENTS = 2000
LIMIT_PER_S = 100
FLOOR_PER_S = 100 / 60  # seed 001: 100 payments per minute
RUN_TIMEOUT_S = 600.0


@dataclass
class _State:
    dir: Path
    payments: int
    runs: int = 0


def setup(ctx: BenchContext) -> _State:
    return _State(Path(tempfile.mkdtemp(prefix="streams-bench-p12-")),
                  min(ctx.events, MAX_PAYMENTS))  # fmt: skip


def _provision(ctx: BenchContext, state: _State) -> Any:
    from streams.broker.admin import apply, catalog_topics
    from streams.catalog import load_catalog
    from streams.settings import Settings

    state.runs += 1
    run_dir = state.dir / f"run-{state.runs}"
    run_dir.mkdir()
    data = yaml.safe_load((eng.REPO / "topics.yaml").read_text())
    data["families"] = {
        name: {**data["families"][name], "partitions": ctx.partitions}
        for name in ("payment", "audit")
    }
    catalog_path = run_dir / "topics.yaml"
    catalog_path.write_text(yaml.safe_dump(data))
    settings = Settings(
        kafka_bootstrap=ctx.bootstrap,
        topic_prefix=f"{ctx.settings.topic_prefix}pay{state.runs}.",
        app_id=f"{ctx.settings.app_id}-pay-{state.runs}",
        replication_factor_override=1,
        catalog_path=catalog_path,
        home=run_dir / "home",
    )
    catalog = load_catalog(catalog_path)
    apply(settings, catalog)
    ctx.created_topics += [s.name for s in catalog_topics(settings, catalog)]
    return settings, catalog, run_dir


def run(ctx: BenchContext, state: _State) -> Sample:
    from streams import Publisher

    settings, catalog, run_dir = _provision(ctx, state)
    with ThreadedProvider(rate_limit_per_s=LIMIT_PER_S) as provider:
        env = {"STREAMS_PAYMENT_API_BASE": provider.url, "STREAMS_PAYMENT_API_KEY": API_KEY}
        worker = WorkerProcess(settings, ["payment"], run_dir / "unused.db",
                               run_dir / "worker.log", extra_env=env,
                               handlers="streams.jobs.registry", builtin_jobs=True)  # fmt: skip
        worker.start()
        publisher = Publisher(settings, catalog=catalog, producer_name="bench")
        try:
            worker.wait_ready(eng.WORKER_READY_TIMEOUT_S)
            items = [
                ("payment.requested", {
                    "payment_id": f"p-{i}", "customer_id": f"c-{i}", "amount_minor": 1130,
                    "currency": "CAD", "provider": "payments", "province": "ON"})
                for i in range(state.payments)
            ]  # fmt: skip
            started = time.monotonic()
            publisher.publish_batch(items)
            while provider.state.charges < state.payments:
                if time.monotonic() - started > RUN_TIMEOUT_S:
                    raise RuntimeError(f"P15: payments not charged within {RUN_TIMEOUT_S:.0f}s")
                time.sleep(0.05)
            elapsed_s = time.monotonic() - started
            throttled = provider.state.requests - provider.state.charges
        finally:
            publisher.close()
            worker.stop()
    return Sample(state.payments / elapsed_s, {"elapsed_s": elapsed_s,
                                               "payments": state.payments,
                                               "provider_429": throttled})  # fmt: skip


def teardown(state: _State) -> None:
    return None


def _judge(summary: Summary, p0: Summary | None) -> bool:
    return summary.median >= FLOOR_PER_S


def _note(summary: Summary) -> str:
    details = summary.samples[0].details
    return (
        f"{details.get('payments', 0):.0f} payments per run against a provider limited to "
        f"{LIMIT_PER_S}/s (catalog bucket {LIMIT_PER_S}/s, also spent by the captures); "
        f"provider requests answered 429 in the first run: {details.get('provider_429', 0):.0f}"
    )


CASE = Case(
    id="P15",
    title="payments (one PaymentIntent each) at the provider's rate limit",
    unit="payments/s",
    target=f">= {FLOOR_PER_S * 60:.0f}/min (seed 001)",
    setup=setup,
    run=run,
    teardown=teardown,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 16",
)
