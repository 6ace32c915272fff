# ruff: noqa: F811  (the store_url and postgres_server fixtures are imported by name)
"""The audit job and its store on SQLite and PostgreSQL: batching, idempotency, queries,
tamper evidence, and the CLI over the same database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, select, update
from tests.support.postgres import postgres_server, store_url  # noqa: F401 - fixtures

from streams.cli import cli
from streams.events import build_event
from streams.jobs.audit import AuditJob, AuditSettings
from streams.jobs.audit_store import ANY_TENANT, duplicate_event_ids, query_audit, verify
from streams.jobs.base import JobContext
from streams.store.schema import audit_records


def claim(i: int, subject: str, *, tenant: str | None = "acme", actor: str = "u1") -> object:
    return build_event(
        "audit.claim_submitted",
        {"subject_id": subject, "actor_id": actor, "amount_minor": i, "details": {"n": str(i)}},
        event_id=f"ev-{i}",
        occurred_at_ms=1_700_000_000_000 + i,
        tenant_id=tenant,
    )


def ctx(event: object) -> JobContext:
    envelope = event.envelope  # type: ignore[attr-defined]
    return JobContext(envelope.event_id, envelope.event_type, "audit")


@pytest.fixture
async def job(store_url: str, tmp_path: Path) -> AsyncIterator[AuditJob]:
    settings = AuditSettings(database_url=store_url, home=tmp_path)
    audit = AuditJob(settings, registry=CollectorRegistry())
    await audit.start()
    try:
        yield audit
    finally:
        await audit.stop()


async def handle_all(job: AuditJob, events: list[object]) -> None:
    await asyncio.gather(*(job.handle(e, ctx(e)) for e in events))


async def test_concurrent_events_share_transactions_and_redeliveries_write_nothing(
    job: AuditJob,
) -> None:
    events = [claim(i, f"claim-{i % 7}") for i in range(200)]
    await handle_all(job, events)
    assert job._committer is not None and job._committer.batches < 50  # grouped, not 1:1
    await handle_all(job, events[:30] + events[:30])  # redelivered, twice at once
    assert job.duplicates == 60
    db = job.db
    assert db is not None
    async with db.transaction(write=False) as conn:
        ids = (await conn.scalars(select(audit_records.c.event_id))).all()
    assert sorted(ids) == sorted(f"ev-{i}" for i in range(200))
    assert await duplicate_event_ids(db) == 0
    assert await verify(db) == (200, [])


async def test_queries_are_tenant_scoped_and_filtered(job: AuditJob) -> None:
    await handle_all(
        job,
        [
            claim(1, "c1", tenant="acme", actor="ann"),
            claim(2, "c1", tenant="acme", actor="bob"),
            claim(3, "c2", tenant="other", actor="ann"),
            claim(4, "c3", tenant=None, actor="ann"),
        ],
    )
    db = job.db
    assert db is not None
    acme = await query_audit(db, tenant_id="acme")
    assert [r.event_id for r in acme] == ["ev-1", "ev-2"]
    assert [r.seq for r in acme] == [1, 2]
    assert acme[0].payload["details"] == {"n": "1"}
    assert [r.event_id for r in await query_audit(db, tenant_id="acme", actor_id="ann")] == ["ev-1"]
    assert [r.event_id for r in await query_audit(db, tenant_id=None)] == ["ev-4"]
    everyone = await query_audit(db, tenant_id=ANY_TENANT, actor_id="ann")
    assert [r.event_id for r in everyone] == ["ev-1", "ev-3", "ev-4"]
    since = await query_audit(db, tenant_id=ANY_TENANT, since_ms=1_700_000_000_003)
    assert [r.event_id for r in since] == ["ev-3", "ev-4"]
    page = await query_audit(db, tenant_id=ANY_TENANT, limit=2)
    rest = await query_audit(db, tenant_id=ANY_TENANT, after=(page[-1].occurred_at_ms, page[-1].id))
    assert [r.event_id for r in page + rest] == ["ev-1", "ev-2", "ev-3", "ev-4"]


async def test_verify_names_an_edited_and_a_deleted_row(job: AuditJob) -> None:
    await handle_all(job, [claim(i, "claim-x") for i in range(5)])
    await handle_all(job, [claim(10 + i, "claim-y") for i in range(3)])
    db = job.db
    assert db is not None
    async with db.transaction() as conn:
        await conn.execute(
            update(audit_records).where(audit_records.c.event_id == "ev-2").values(actor_id="eve")
        )
        await conn.execute(delete(audit_records).where(audit_records.c.event_id == "ev-11"))
    rows, problems = await verify(db)
    assert rows == 7
    assert [(p.subject_id, p.event_id) for p in problems] == [
        ("claim-x", "ev-2"),
        ("claim-y", "ev-12"),
    ]


async def test_the_cli_queries_and_verifies_the_same_database(
    job: AuditJob, store_url: str, tmp_path: Path
) -> None:
    await handle_all(job, [claim(i, "claim-z", actor=f"a{i}") for i in range(3)])
    env = {"STREAMS_DATABASE_URL": store_url, "STREAMS_HOME": str(tmp_path)}
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        # the CLI opens its own event loop: run it off this test's loop
        result = runner.invoke(cli, list(args), env=env)
        return result.exit_code, result.output

    code, out = await asyncio.to_thread(
        run, "audit", "query", "--subject", "claim-z", "--format", "json"
    )
    assert code == 0, out
    assert [json.loads(line)["actor_id"] for line in out.splitlines()] == ["a0", "a1", "a2"]
    code, out = await asyncio.to_thread(run, "audit", "query", "--actor", "a1")
    assert code == 0 and "claim-z" in out and "1 record(s)" in out
    code, out = await asyncio.to_thread(run, "audit", "verify")
    assert code == 0 and "3 row(s), every chain intact" in out
    db = job.db
    assert db is not None
    async with db.transaction() as conn:
        await conn.execute(
            update(audit_records).where(audit_records.c.event_id == "ev-1").values(payload="{}")
        )
    code, out = await asyncio.to_thread(run, "audit", "verify")
    assert code == 1
    assert "BROKEN subject 'claim-z' seq 2 (event ev-1)" in out
    code, out = await asyncio.to_thread(run, "store", "migrate")
    assert code == 0 and "at revision 0004_retention" in out  # the head migration


async def test_a_permanently_bad_entry_fails_alone_in_its_batch(job: AuditJob) -> None:
    from streams.errors import Permanent
    from streams.jobs.audit_chain import entry_from_event

    entries = [entry_from_event(claim(i, "c-ok")) for i in range(5)]
    too_long = dataclasses.replace(entries[2], event_id="ev-bad", actor_id="x" * 300)
    outcomes = await job._flush([*entries[:2], too_long, *entries[2:]])
    db = job.db
    assert db is not None
    stored = [r.event_id for r in await query_audit(db, tenant_id="acme")]
    if db.dialect == "postgresql":  # VARCHAR(256) is enforced: that row alone is refused
        assert outcomes[:2] == [True, True] and outcomes[3:] == [True, True, True]
        assert isinstance(outcomes[2], Permanent)
        assert stored == [f"ev-{i}" for i in range(5)]
    else:  # SQLite does not enforce lengths: the batch is written whole
        assert outcomes == [True] * 6
        assert sorted(stored) == sorted([*(f"ev-{i}" for i in range(5)), "ev-bad"])
