# ruff: noqa: F811  (the store_url and postgres_server fixtures are imported by name)
"""Acceptance: 5,000 audit events through a SIGKILL of a real worker, on the shared Kafka
broker, into SQLite and into PostgreSQL: exactly 5,000 rows, no duplicate, every chain
intact; ``streams audit verify`` then catches a row edited by hand."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.support.engine import REPO, TEST_AUDIT, WorkerProcess, provision
from tests.support.postgres import postgres_server, store_url  # noqa: F401 - fixtures

from streams.errors import HandlerError
from streams.jobs.audit_store import duplicate_event_ids, verify
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.store import Database
from streams.store.schema import audit_records
from streams.testing.processes import write_catalog

pytestmark = pytest.mark.kafka

EVENTS = 5_000
SUBJECTS = 50
KILL_AT_ROWS = 1_000
DONE_TIMEOUT_S = 240.0


async def row_count(db: Database) -> int:
    async with db.transaction(write=False) as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(audit_records))).scalar_one()
        )


async def wait_rows(db: Database, at_least: int, worker: WorkerProcess, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            count = await row_count(db)
        except HandlerError:  # no table until the worker has migrated the store
            count = 0
        if count >= at_least:
            return count
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited {worker.proc.returncode}:\n{worker.tail()}")
        await asyncio.sleep(0.02)
    raise AssertionError(f"{await row_count(db)} rows after {timeout_s}s, want {at_least}")


def edit_by_hand(url: str, event_id: str, request: pytest.FixtureRequest) -> None:
    sql = f"UPDATE audit_records SET actor_id = 'mallory' WHERE event_id = '{event_id}'"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            assert conn.execute(sql).rowcount == 1
    else:
        server = request.getfixturevalue("postgres_server")
        assert server.psql(sql, url.rsplit("/", 1)[1]).strip() == "UPDATE 1"


def audit_verify(url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update({"STREAMS_DATABASE_URL": url, "STREAMS_HOME": str(home)})
    return subprocess.run(
        [sys.executable, "-m", "streams", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


async def test_5000_audit_events_through_a_sigkill_land_exactly_once(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    store_url: str,
    request: pytest.FixtureRequest,
) -> None:
    settings = make_settings(catalog_path=write_catalog(tmp_path, {"audit": TEST_AUDIT}))
    catalog = provision(settings)
    with Publisher(settings, catalog=catalog) as publisher:
        items = [
            (
                "audit.claim_submitted",
                {"subject_id": f"claim-{i % SUBJECTS}", "actor_id": f"user-{i % 7}"},
            )
            for i in range(EVENTS)
        ]
        for start in range(0, EVENTS, 1000):
            await publisher.publish_batch_async(items[start : start + 1000])

    def worker(name: str) -> WorkerProcess:
        return WorkerProcess(
            settings,
            ["audit"],
            tmp_path / "unused-ledger.db",
            tmp_path / f"{name}.log",
            worker_id="w1",  # static membership: the restarted worker takes over at once
            extra_env={"STREAMS_DATABASE_URL": store_url},
            handlers="streams.jobs.registry",
            builtin_jobs=True,
        ).start()

    db = Database(store_url)
    first = worker("first")
    try:
        at_kill = await wait_rows(db, KILL_AT_ROWS, first, 120)
        first.kill()
        assert at_kill < EVENTS, "the worker finished before the kill: nothing was tested"
        second = worker("second")
        try:
            await wait_rows(db, EVENTS, second, DONE_TIMEOUT_S)
            await asyncio.sleep(1.0)  # late redeliveries would show up as extra rows
            assert await row_count(db) == EVENTS
        finally:
            second.stop()
        assert await duplicate_event_ids(db) == 0
        assert await verify(db) == (EVENTS, [])
    finally:
        await db.dispose()

    ok = audit_verify(store_url, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f"{EVENTS} row(s), every chain intact" in ok.stdout
    edit_by_hand(store_url, await _some_event_id(store_url), request)
    broken = audit_verify(store_url, tmp_path)
    assert broken.returncode == 1
    assert "BROKEN subject 'claim-" in broken.stdout and "edited" in broken.stdout


async def _some_event_id(url: str) -> str:
    db = Database(url)
    try:
        async with db.transaction(write=False) as conn:
            q = select(audit_records.c.event_id).where(audit_records.c.seq == 3).limit(1)
            return str((await conn.execute(q)).scalar_one())
    finally:
        await db.dispose()
