"""P13: retention rows deleted per second on PostgreSQL, batches of 1,000, and the longest
single transaction (issue 11).

Method: a PostgreSQL server the case starts itself (fsync on, ``tests.support.postgres``);
each repetition creates a fresh database, migrates the store and the sample application
schema, generates ``--events`` rows per sample table (``retention.sample``) and times the
shipped ``chat_messages`` policy (delete read messages older than 90 days; ~40% of the
rows) run by ``RetentionEngine`` with ``batch_size=1000``: rows/s = rows deleted / wall
time of the run; the longest transaction is the slowest batch (select + delete + progress
row, one transaction). No Kafka involved.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import BenchContext, Case, Sample, Summary

REPO = Path(__file__).resolve().parents[2]
TICK_MS = 1_780_000_000_000


@dataclass
class _State:
    server: Any


def setup(ctx: BenchContext) -> _State:
    from tests.support.postgres import start_server

    return _State(start_server(durable=True))


def teardown(state: _State) -> None:
    state.server.stop()


async def _run(url: str, rows: int) -> tuple[int, float, float, int]:
    from streams.retention.engine import RetentionEngine
    from streams.retention.rules import load_retention
    from streams.retention.sample import generate
    from streams.store.database import Database

    db = Database(url, timeout_s=120)
    try:
        await db.migrate()
        await generate(db, TICK_MS, rows)
        engine = RetentionEngine(db, load_retention(REPO / "retention.yaml"))
        started = time.perf_counter()
        report = await engine.run("chat_messages", run_id="bench", tick_ms=TICK_MS, batch_size=1000)
        elapsed = time.perf_counter() - started
        (rule,) = report.rules
        return rule.counts["deleted"], elapsed, rule.longest_batch_s, rule.batches
    finally:
        await db.dispose()


def run(ctx: BenchContext, state: _State) -> Sample:
    url = state.server.create_database("p13")
    deleted, elapsed_s, longest_s, batches = asyncio.run(_run(url, ctx.events))
    rate = deleted / elapsed_s if elapsed_s > 0 else 0.0
    return Sample(
        rate,
        {"rows_deleted": deleted, "batches": batches, "longest_transaction_ms": longest_s * 1000},
    )


def _note(summary: Summary) -> str:
    longest = summary.detail("longest_transaction_ms")
    deleted = summary.detail("rows_deleted")
    return (
        f"retention delete, PostgreSQL, batches of 1,000: {summary.median:,.0f} rows/s "
        f"({deleted[0]:,.0f} rows); longest single transaction {longest[2]:,.1f} ms"
    )


CASE = Case(
    id="P13",
    title="retention rows deleted per second (PostgreSQL, batches of 1,000)",
    unit="rows/s",
    target="none (reference); longest transaction reported",
    setup=setup,
    run=run,
    teardown=teardown,
    note=_note,
    concurrency="1 process, 1 connection, 1,000 rows per transaction",
)
