"""P10: audit rows stored per second by one worker, into PostgreSQL and into SQLite.

The ``audit`` family (the run's partition count, concurrency 32, the repo's retry ladder)
under the case's own prefix holds N pre-loaded ``audit.claim_submitted`` events over 1,000
subjects (so chains grow, as they do in production). Each round runs the real audit job
(``streams worker --family audit`` with the built-in jobs) twice with fresh app ids: into a
fresh database on a PostgreSQL server the case starts itself (durable settings: fsync on,
``tests.support.postgres``), and into a fresh SQLite file (WAL, synchronous=NORMAL). The
rate is the rows after the first batch over the span of ``recorded_at_ms`` from the
first batch to the last (start-up, group join and migration are excluded). Every run must
store exactly N rows with intact chains. The value is PostgreSQL's rate; SQLite's is in
the note. Target >= 2,000 rows/s on both.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench.cases import _engine as eng
from bench.harness import BenchContext, Case, Sample, Summary

TARGET_ROWS_PER_S = 2_000.0
SUBJECTS = 1_000
RUN_TIMEOUT_S = 300.0
BODY: dict[str, Any] = {"concurrency": 32, "handler_timeout": "30s", "rate_limits": []}


@dataclass
class _State:
    fam: eng.BenchFamily
    server: Any  # tests.support.postgres.PostgresServer


def setup(ctx: BenchContext) -> _State:
    from tests.support.postgres import start_server

    fam = eng.family(ctx, "p10", BODY)
    eng.preload(fam, ctx.events, keys=SUBJECTS)
    return _State(fam, start_server(durable=True))


def teardown(state: _State) -> None:
    state.server.stop()


async def _stored(url: str) -> tuple[int, int, int, int]:
    """(rows, rows of the first batch, its recorded_at_ms, the last batch's); zeros
    before the migration."""
    from sqlalchemy import func, select

    from streams.errors import HandlerError
    from streams.store import Database
    from streams.store.schema import audit_records as t

    db = Database(url)
    try:
        async with db.transaction(write=False) as conn:
            q = select(func.count(), func.min(t.c.recorded_at_ms), func.max(t.c.recorded_at_ms))
            count, first, last = (await conn.execute(q)).one()
            q = select(func.count()).where(t.c.recorded_at_ms == first)
            in_first = (await conn.execute(q)).scalar_one() if first is not None else 0
            return int(count), int(in_first), int(first or 0), int(last or 0)
    except HandlerError:
        return 0, 0, 0, 0
    finally:
        await db.dispose()


async def _verified(url: str) -> int:
    from streams.jobs.audit_store import verify
    from streams.store import Database

    db = Database(url)
    try:
        rows, problems = await verify(db)
    finally:
        await db.dispose()
    if problems:
        raise RuntimeError(f"{url}: {len(problems)} broken chains, first: {problems[0]}")
    return rows


def drain_into(ctx: BenchContext, fam: eng.BenchFamily, url: str, label: str) -> float:
    """One worker run storing the pre-loaded events into ``url``: rows/s."""
    app_id = fam.next_app_id(label)
    settings = fam.provision(app_id)
    worker = eng.WorkerProcess(
        settings,
        [eng.FAMILY],
        fam.dir / f"{app_id}.unused.db",
        fam.dir / f"{app_id}.log",
        worker_id="w1",
        extra_env={"STREAMS_DATABASE_URL": url},
        handlers="streams.jobs.registry",  # nothing but the built-in jobs
        builtin_jobs=True,
        loglevel="warning",
    ).start()
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (stored := asyncio.run(_stored(url)))[0] < ctx.events:
            if worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"{label}: worker exited:\n{worker.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {stored[0]} of {ctx.events} rows:\n{worker.tail()}")
            time.sleep(0.2)
    finally:
        eng.stop(worker)
    count, in_first, first_ms, last_ms = stored
    if count != ctx.events or asyncio.run(_verified(url)) != ctx.events:
        raise RuntimeError(f"{label}: {count} rows stored, expected {ctx.events}")
    # the first batch's rows were stored at first_ms: the span times the rows after it
    return (count - in_first) / max(0.001, (last_ms - first_ms) / 1000)


def run(ctx: BenchContext, state: _State) -> Sample:
    pg = drain_into(ctx, state.fam, state.server.create_database("p10"), "pg")
    sqlite_file = state.fam.dir / f"p10-{time.time_ns()}.db"
    lite = drain_into(ctx, state.fam, f"sqlite:///{sqlite_file}", "sqlite")
    return Sample(pg, {"postgresql_rows_per_s": pg, "sqlite_rows_per_s": lite})


def _judge(summary: Summary, p0: Summary | None) -> bool:
    lite = summary.detail("sqlite_rows_per_s")[0]
    return summary.median >= TARGET_ROWS_PER_S and lite >= TARGET_ROWS_PER_S


def _note(summary: Summary) -> str:
    pg = summary.detail("postgresql_rows_per_s")
    lite = summary.detail("sqlite_rows_per_s")
    return (
        f"audit rows/s, one worker: PostgreSQL median {pg[0]:,.0f} (min {pg[1]:,.0f}, max "
        f"{pg[2]:,.0f}); SQLite median {lite[0]:,.0f} (min {lite[1]:,.0f}, max {lite[2]:,.0f})"
    )


CASE = Case(
    id="P10",
    title="audit rows stored per worker (PostgreSQL; SQLite in the note)",
    unit="rows/s",
    target=f">= {TARGET_ROWS_PER_S:,.0f} rows/s (both)",
    setup=setup,
    run=run,
    teardown=teardown,
    judge=_judge,
    note=_note,
    concurrency="1 worker process, family concurrency 32, group commit",
)
