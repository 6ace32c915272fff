"""P5: DLQ replay throughput; and the export of the same DLQ (time, peak RSS).

The ``redrive`` audit family (PIPE_AUDIT) gets N dead-lettered ``audit.claim_submitted``
records (200 B values, real failure headers, written once by a raw producer). Each round
runs the redrive engine (``streams.dlq.redrive.Redrive.start``, the code behind ``streams
dlq redrive``) over all N at unlimited rate: the resolved-state read, the superseded
pre-scan, the resume scan of the main topic, the paced send loop and the Kafka checkpoints
every 1,000 records are all inside the timed span. The headline is records sent per
second, judged against >= 50% of P1's median from the same run (when P1 ran).

Each round also runs ``streams dlq export --format jsonl -o /dev/null`` as a child process
over the same N records and reports its wall time and its peak RSS (``ru_maxrss``): the
streaming export keeps one record in memory, so the RSS should not grow with N.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

TARGET_VS_P1 = 0.5
_EXPORT = (
    "import resource, sys\n"
    "from streams.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


@dataclass
class _State:
    fam: eng.BenchFamily
    settings: Any


def setup(ctx: BenchContext) -> _State:
    from confluent_kafka import Producer

    from streams.core import headers as h
    from streams.dlq.kafka_io import REDRIVES_TOPIC, STATE_TOPIC

    fam = eng.family(ctx, "redrive", eng.PIPE_AUDIT)
    settings = fam.provision()
    ctx.created_topics += [f"{fam.prefix}{STATE_TOPIC}", f"{fam.prefix}{REDRIVES_TOPIC}"]
    publisher = fam.publisher()
    producer = Producer(ctx.producer_conf(**{"linger.ms": 20}))
    try:
        pad = eng.pad_for(publisher, ctx.payload_bytes, ctx.events)
        now_ms = int(time.time() * 1000)
        failure = h.Failure("streams.errors.Retryable", "HTTP 503 from partner").headers()
        for i in range(ctx.events):
            rec = publisher.prepare(eng.EVENT_TYPE, eng.payload(i, ctx.events, pad))
            partition = i % ctx.partitions
            headers = [(k, v) for k, v in rec.headers] + [
                (k, v.encode())
                for k, v in {
                    **h.Origin(fam.main_topic, partition, i, now_ms).headers(),
                    h.ATTEMPT: "5",
                    h.FIRST_FAILURE_AT_MS: str(now_ms),
                    h.FAILED_AT_MS: str(now_ms),
                    **failure,
                    h.DLQ_REASON: "exhausted",
                }.items()
            ]
            while True:
                try:
                    producer.produce(
                        f"{fam.prefix}{eng.FAMILY}.dlq",
                        value=rec.value,
                        key=rec.key,
                        partition=partition,
                        headers=headers,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        if producer.flush(120):
            raise RuntimeError("the DLQ preload was not delivered")
    finally:
        publisher.close(10)
    return _State(fam, settings)


def _export(ctx: BenchContext, state: _State) -> tuple[float, float]:
    s = state.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")},
        "STREAMS_KAFKA_BOOTSTRAP": ctx.bootstrap,
        "STREAMS_TOPIC_PREFIX": s.topic_prefix,
        "STREAMS_APP_ID": s.app_id,
        "STREAMS_CATALOG_PATH": str(s.catalog_path),
        "STREAMS_HOME": str(s.home),
    }
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _EXPORT,
            "dlq",
            "export",
            eng.FAMILY,
            "--format",
            "jsonl",
            "--no-progress",
            "-o",
            os.devnull,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed_s = time.monotonic() - started
    rss = [line for line in done.stderr.splitlines() if line.startswith("maxrss_kb")]
    if done.returncode or not rss or f"exported {ctx.events} records" not in done.stderr:
        raise RuntimeError(f"export failed ({done.returncode}): {done.stderr[-800:]}")
    return elapsed_s, int(rss[-1].split()[1]) / 1024


def run(ctx: BenchContext, state: _State) -> Sample:
    from streams.dlq.filters import DlqFilter
    from streams.dlq.redrive import Options, Redrive
    from streams.dlq.tenants import TenantLookup

    engine = Redrive(state.settings, state.fam.catalog, eng.FAMILY, tenants=TenantLookup(None))
    started = time.monotonic()
    report = engine.start(DlqFilter(), Options(), actor="bench")
    elapsed_s = time.monotonic() - started
    if report.sent != ctx.events or report.state != "done":
        raise RuntimeError(f"redrive: {json.dumps(report.as_json())[:600]}")
    export_s, export_rss_mb = _export(ctx, state)
    return Sample(
        ctx.events / elapsed_s,
        {
            "elapsed_s": elapsed_s,
            "export_s": export_s,
            "export_records_per_s": ctx.events / export_s,
            "export_maxrss_mb": export_rss_mb,
        },
    )


def _judge(summary: Summary, p0: Summary | None) -> bool | None:
    p1 = eng.measured.get("P1")
    if not p1:
        return None
    p1_median = sorted(p1)[len(p1) // 2]
    return summary.median >= TARGET_VS_P1 * p1_median


def _note(summary: Summary) -> str:
    p1 = eng.measured.get("P1")
    vs = ""
    if p1:
        p1_median = sorted(p1)[len(p1) // 2]
        vs = f"{summary.median / p1_median:.2f} x P1 ({p1_median:,.0f}/s); "
    t = summary.detail("export_s")
    rate = summary.detail("export_records_per_s")
    rss = summary.detail("export_maxrss_mb")
    return (
        f"{vs}export of the same DLQ: {t[0]:.1f} s (min {t[1]:.1f}, max {t[2]:.1f}), "
        f"{rate[0]:,.0f} records/s, peak RSS {rss[0]:.0f} MB (min {rss[1]:.0f}, max {rss[2]:.0f})"
    )


CASE = Case(
    id="P5",
    title="DLQ redrive at unlimited rate (+ export time and RSS)",
    unit="events/s",
    target=f">= {TARGET_VS_P1:.0%} of P1",
    setup=setup,
    run=run,
    judge=_judge,
    note=_note,
    concurrency="1 process (the redrive engine), acks=all, idempotent producer",
)
