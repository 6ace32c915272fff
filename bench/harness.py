"""The benchmark harness: registry, broker, repetitions, table and JSON results.

A case is one module in ``bench/cases`` that defines ``CASE = Case(...)`` (modules whose
name starts with ``_`` are helpers and are not imported by the registry). Every selected
case runs once per round, ``--repeat`` rounds, interleaved (P0, P9, P0, P9, ...), so the
ratios compare figures taken side by side on the same noisy machine. The table shows the
median, min and max of each case, its ratio to P0's median of the same run, its target and
pass/fail, then the issue's goals met or not (``bench.goals``);
``bench/results/<UTC timestamp>.json`` keeps every sample and ``<UTC timestamp>.png`` beside it
draws the run (``bench.plot``; ``python -m bench plot <results.json>`` redraws it).

Benchmarks never decide the test suite's pass/fail; ``--strict`` makes a missed target exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pkgutil
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.brokers import BrokerInfo, broker

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_EVENTS = 50_000
DEFAULT_REPEAT = 3
DEFAULT_PARTITIONS = 6
PAYLOAD_BYTES = 200

# --- the case contract --------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One repetition of a case: the headline ``value`` (in the case's unit) and details;
    ``series`` keeps distributions for the JSON and the plot (P3: its latency histogram as
    ``[[ms, count], ...]``)."""

    value: float
    details: Mapping[str, float] = field(default_factory=dict)
    series: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    """Every sample of one case in this run, with medians and the verdict."""

    case: Case
    samples: list[Sample]
    ratio_to_p0: float | None = None
    ratio_to_f0: float | None = None
    passed: bool | None = None
    errors: list[str] = field(default_factory=list)  # runs (or the setup) that raised

    @property
    def values(self) -> list[float]:
        return [s.value for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def detail(self, name: str) -> tuple[float, float, float]:
        """(median, min, max) of a detail over the samples."""
        values = [s.details[name] for s in self.samples if name in s.details]
        return statistics.median(values), min(values), max(values)


@dataclass(frozen=True)
class Case:
    """A benchmark case.

    ``setup(ctx)`` runs once (topics, pre-loaded data) and returns a state handed to every
    ``run(ctx, state)``; ``teardown(state)`` closes clients. ``judge(summary, p0)`` returns
    True/False against the target, or None for a reference without one. ``note`` renders
    extra figures for the table.
    """

    id: str
    title: str
    unit: str
    target: str
    run: Callable[[BenchContext, Any], Sample]
    setup: Callable[[BenchContext], Any] = lambda ctx: None
    teardown: Callable[[Any], None] = lambda state: None
    judge: Callable[[Summary, Summary | None], bool | None] = lambda s, p0: None
    note: Callable[[Summary], str] = lambda s: ""
    concurrency: str = "1 process, 1 thread"
    max_rounds: int | None = None  # e.g. 1 for a long case that runs once whatever --repeat


# --- the context handed to cases ----------------------------------------------------------


@dataclass
class BenchContext:
    """What a case needs: settings, sizes, and a topic factory cleaned up after the run."""

    settings: Any  # streams.settings.Settings
    events: int
    partitions: int
    payload_bytes: int
    run_id: str
    created_topics: list[str] = field(default_factory=list)
    _admin: Any = None

    @property
    def bootstrap(self) -> str:
        return str(self.settings.bootstrap)

    def admin(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            from streams.broker.clients import base_conf

            self._admin = AdminClient(base_conf(self.settings))
        return self._admin

    def topic_name(self, name: str) -> str:
        """``name`` made unique to this run (the run's topic prefix)."""
        return f"{self.settings.topic_prefix}{name}"

    def create_topic(
        self, name: str, partitions: int | None = None, configs: Mapping[str, str] | None = None
    ) -> str:
        """Create a topic (deleted when the run ends) and wait until it is usable."""
        from confluent_kafka.admin import NewTopic

        spec = NewTopic(name, partitions or self.partitions, 1, config=dict(configs or {}))
        self.admin().create_topics([spec], operation_timeout=30)[name].result(timeout=60)
        self.created_topics.append(name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            meta = self.admin().list_topics(name, timeout=10).topics.get(name)
            if (
                meta is not None
                and meta.error is None
                and len(meta.partitions) == (partitions or self.partitions)
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                return name
            time.sleep(0.1)
        raise RuntimeError(f"topic {name} has no leaders 30 s after creation")

    def producer_conf(self, **extra: Any) -> dict[str, Any]:
        """A raw confluent-kafka producer configuration: acks=all, idempotent, murmur2."""
        from streams.broker.clients import base_conf

        return base_conf(
            self.settings,
            **{
                "acks": "all",
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                **extra,
            },
        )

    def cleanup(self) -> None:
        """Delete the run's topics and drop the admin client (before a local broker stops)."""
        if self.created_topics:
            futures = self.admin().delete_topics(self.created_topics, operation_timeout=30)
            for future in futures.values():
                with contextlib.suppress(Exception):
                    future.result(timeout=30)
        self._admin = None


# --- registry -----------------------------------------------------------------------------


def discover() -> list[Case]:
    """Every ``CASE`` defined in a module of ``bench.cases``, in id order (P0 first)."""
    import bench.cases

    cases: list[Case] = []
    for module in pkgutil.iter_modules(bench.cases.__path__):
        if module.name.startswith("_"):  # helpers shared by cases, not cases
            continue
        mod = importlib.import_module(f"bench.cases.{module.name}")
        case = getattr(mod, "CASE", None)
        if isinstance(case, Case):
            cases.append(case)
    ids = [c.id for c in cases]
    if len(ids) != len(set(ids)):
        raise SystemExit(f"duplicate case ids in bench/cases: {sorted(ids)}")
    return sorted(cases, key=lambda c: (c.id != "P0", len(c.id), c.id))


# --- running ---------------------------------------------------------------------------------


def run_cases(cases: list[Case], ctx: BenchContext, repeat: int) -> list[Summary]:
    """Set every case up, run ``repeat`` interleaved rounds, tear down; judge the medians."""
    states: dict[str, Any] = {}
    summaries = {c.id: Summary(c, []) for c in cases}
    try:
        for case in cases:
            print(f"[{case.id}] setup ...", file=sys.stderr)
            try:
                states[case.id] = case.setup(ctx)
            except Exception as exc:  # one broken case must not lose the others' figures
                _report_error(summaries[case.id], "setup", exc)
        for round_no in range(1, repeat + 1):
            for case in cases:
                if case.max_rounds is not None and round_no > case.max_rounds:
                    continue
                if case.id not in states:
                    continue
                try:
                    sample = case.run(ctx, states[case.id])
                except Exception as exc:
                    _report_error(summaries[case.id], f"round {round_no}", exc)
                    continue
                summaries[case.id].samples.append(sample)
                print(
                    f"[{case.id}] round {round_no}/{repeat}: {sample.value:,.0f} {case.unit}",
                    file=sys.stderr,
                )
    finally:
        for case in cases:
            if case.id in states:
                with contextlib.suppress(Exception):
                    case.teardown(states[case.id])
    p0 = summaries.get("P0")
    f0 = summaries.get("F0")  # the bare faust agent: the framework's own ceiling
    p0 = p0 if p0 is not None and p0.samples else None
    f0 = f0 if f0 is not None and f0.samples else None
    for summary in summaries.values():
        if not summary.samples:
            summary.passed = False if summary.errors else None
            continue
        if p0 is not None and summary.case.unit == p0.case.unit and p0.median > 0:
            summary.ratio_to_p0 = summary.median / p0.median
        if f0 is not None and summary.case.unit == f0.case.unit and f0.median > 0:
            summary.ratio_to_f0 = summary.median / f0.median
        summary.passed = summary.case.judge(summary, p0)
    return list(summaries.values())


def _report_error(summary: Summary, when: str, exc: Exception) -> None:
    import traceback

    traceback.print_exception(exc, file=sys.stderr)
    summary.errors.append(f"{when}: {exc!r}"[:2000])
    print(f"[{summary.case.id}] {when} FAILED: {exc!r}"[:500], file=sys.stderr)


def render_table(summaries: list[Summary]) -> str:
    """A fixed-width table: one row per case."""
    header = ("case", "what", "median", "min", "max", "unit", "x P0", "x F0", "target", "result")
    rows = [header]
    for s in summaries:
        verdict = {True: "PASS", False: "FAIL", None: "-"}[s.passed]
        if not s.samples:
            rows.append(
                (
                    s.case.id,
                    s.case.title,
                    "-",
                    "-",
                    "-",
                    s.case.unit,
                    "-",
                    "-",
                    s.case.target,
                    "ERROR" if s.errors else "-",
                )
            )
            continue
        if s.errors:
            verdict += f" ({len(s.errors)} run(s) failed)"
        rows.append(
            (
                s.case.id,
                s.case.title,
                f"{s.median:,.0f}",
                f"{min(s.values):,.0f}",
                f"{max(s.values):,.0f}",
                s.case.unit,
                "-" if s.ratio_to_p0 is None else f"{s.ratio_to_p0:.2f}",
                "-" if s.ratio_to_f0 is None else f"{s.ratio_to_f0:.2f}",
                s.case.target,
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {s.case.id}: {s.case.note(s)}" for s in summaries if s.samples and s.case.note(s)]
    notes += [f"  {s.case.id}: ERROR {e[:300]}" for s in summaries for e in s.errors]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))


def results_document(
    summaries: list[Summary], ctx: BenchContext, info: BrokerInfo, repeat: int, started: datetime
) -> dict[str, Any]:
    import confluent_kafka

    return {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,  # version() is a str: [0] was "2"
        "librdkafka": confluent_kafka.libversion()[0],
        "broker": {
            "bootstrap": info.bootstrap,
            "version": info.version,
            "version_source": info.version_source,
            "started_by_bench": info.started_here,
        },
        "partitions": ctx.partitions,
        "events": ctx.events,
        "payload_bytes": ctx.payload_bytes,
        "repeat": repeat,
        "cases": [
            {
                "id": s.case.id,
                "title": s.case.title,
                "unit": s.case.unit,
                "target": s.case.target,
                "concurrency": s.case.concurrency,
                "median": s.median if s.samples else None,
                "min": min(s.values) if s.samples else None,
                "max": max(s.values) if s.samples else None,
                "ratio_to_p0": s.ratio_to_p0,
                "ratio_to_f0": s.ratio_to_f0,
                "passed": s.passed,
                "note": s.case.note(s) if s.samples else "",
                "errors": s.errors,
                "samples": [
                    {"value": x.value, "details": dict(x.details)}
                    | ({"series": dict(x.series)} if x.series else {})
                    for x in s.samples
                ],
            }
            for s in summaries
        ],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma list of case ids, e.g. P0,P9")
    parser.add_argument("--skip", default="", help="comma list of case ids to leave out, e.g. P4")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events per run")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="rounds (median)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--broker-version", default=None, help="record this broker version")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    for name in ("events", "repeat", "partitions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def select(cases: list[Case], only: str, skip: str = "") -> list[Case]:
    known = {c.id: c for c in cases}
    wanted = [x.strip().upper() for x in only.split(",") if x.strip()]
    skipped = [x.strip().upper() for x in skip.split(",") if x.strip()]
    unknown = [w for w in wanted + skipped if w not in known]
    if unknown:
        raise SystemExit(f"unknown case id(s) {unknown}; known: {sorted(known)}")
    return [c for c in cases if (not wanted or c.id in wanted) and c.id not in skipped]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = select(discover(), args.only, args.skip)
    if args.list:
        for case in cases:
            print(f"{case.id}  {case.title}  (target: {case.target})")
        return 0
    from streams.settings import Settings

    started = datetime.now(UTC)
    run_id = uuid.uuid4().hex[:8]
    with broker(args.broker_version) as info:
        settings = Settings(
            kafka_bootstrap=info.bootstrap,
            topic_prefix=f"bench-{run_id}.",
            app_id=f"bench-{run_id}",
            replication_factor_override=1,
        )
        ctx = BenchContext(settings, args.events, args.partitions, PAYLOAD_BYTES, run_id)
        try:
            summaries = run_cases(cases, ctx, args.repeat)
        finally:
            ctx.cleanup()
    print()
    print(
        f"broker {info.version} ({info.version_source}) at {info.bootstrap}; "
        f"{args.partitions} partitions, {args.events:,} events x {args.repeat} rounds, "
        f"{PAYLOAD_BYTES} B payloads"
    )
    print(render_table(summaries))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = results_document(summaries, ctx, info, args.repeat, started)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    from bench import goals, plot

    verdicts = goals.verdicts(document)
    if any(v.status != goals.NO_DATA for v in verdicts):
        print("\ngoals (issue 17):")
        print(goals.render(verdicts))
    print(f"\nresults: {path}")
    picture = plot.draw_beside(document, path)
    if picture is not None:
        print(f"picture: {picture}")
    missed = [s.case.id for s in summaries if s.passed is False]
    return 1 if args.strict and missed else 0
