# ruff: noqa: F811  (the store_url and postgres_server fixtures are imported by name)
"""The retention engine on generated sample databases (real SQLite and PostgreSQL): each
shipped policy removes exactly the rows it should, archives (verified) before deleting,
anonymises orders, keeps payments, honours legal holds; dry-run changes nothing; a run
SIGKILLed midway and delivered again ends in the same state with exact counts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from tests.support.postgres import postgres_server, store_url  # noqa: F401 - fixtures

from streams.retention.engine import RetentionEngine
from streams.retention.rules import RetentionConfig, Rule, load_retention
from streams.retention.sample import DAY_MS, TABLES, generate
from streams.store.database import Database
from streams.store.schema import retention_runs

REPO = Path(__file__).resolve().parents[2]
TICK = 1_780_000_000_000  # 2026-05-28
HELD = "held-subject"
ROWS = 20_000


def config_for(tmp_path: Path, holds: list[str]) -> Path:
    data = yaml.safe_load((REPO / "retention.yaml").read_text())
    data["legal_holds"] = holds
    data["policies"]["temp_files"]["rules"][0]["directory"] = str(tmp_path / "tmp-uploads")
    path = tmp_path / "retention.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def snapshot(db: Database) -> dict[str, str]:
    """A digest of every sample table's full content."""
    out = {}
    md = sa.MetaData()
    async with db.transaction(write=False) as conn:
        for name in TABLES:
            t = await conn.run_sync(lambda c, n=name: sa.Table(n, md, autoload_with=c))
            rows = (await conn.execute(sa.select(t).order_by(t.c.id))).all()
            out[name] = hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest()
    return out


async def ids(db: Database, table: str, where: str = "1=1") -> set[Any]:
    async with db.transaction(write=False) as conn:
        return set((await conn.execute(sa.text(f"SELECT id FROM {table} WHERE {where}"))).scalars())


def expected(data: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What each policy must leave, computed from the generated rows (not the engine's SQL)."""
    held = {HELD}

    def keep(table: str, gone: Any) -> set[Any]:
        return {r["id"] for r in data[table] if not gone(r)}

    notified = {
        a["id"]
        for a in data["accounts"]
        if a["last_active_at_ms"] < TICK - 700 * DAY_MS
        and a["deletion_notice_at_ms"] is None
        and a["id"] not in held
    }
    deleted_accounts = {
        a["id"]
        for a in data["accounts"]
        if a["last_active_at_ms"] < TICK - 730 * DAY_MS
        and a["deletion_notice_at_ms"] is not None
        and a["deletion_notice_at_ms"] < TICK - 30 * DAY_MS
        and a["id"] not in held
    }
    critical = {
        r["id"]
        for r in data["audit_logs"]
        if r["severity"] == "critical"
        and r["created_at_ms"] < TICK - 365 * DAY_MS
        and r["actor_id"] not in held
    }
    return {
        "chat_messages": keep(
            "chat_messages",
            lambda r: (
                r["created_at_ms"] < TICK - 90 * DAY_MS
                and r["is_read"]
                and r["sender_id"] not in held
            ),
        ),
        "sessions": keep(
            "sessions",
            lambda r: r["last_activity_at_ms"] < TICK - 7 * DAY_MS and r["user_id"] not in held,
        ),
        "refresh_tokens": keep(
            "refresh_tokens", lambda r: r["expires_at_ms"] < TICK and r["user_id"] not in held
        ),
        "audit_logs": keep(
            "audit_logs",
            lambda r: r["created_at_ms"] < TICK - 365 * DAY_MS and r["actor_id"] not in held,
        ),
        "critical_archived": critical,
        "notifications": keep(
            "notifications",
            lambda r: (
                r["created_at_ms"] < TICK - 90 * DAY_MS
                and r["is_read"]
                and r["user_id"] not in held
            ),
        ),
        "payments_archived": {
            r["id"] for r in data["payment_records"] if r["created_at_ms"] < TICK - 730 * DAY_MS
        },
        "notified": notified,
        "deleted_accounts": deleted_accounts,
        "anonymized_orders": {
            o["id"] for o in data["orders"] if o["account_id"] in deleted_accounts
        },
    }


def archived_ids(root: Path, policy: str) -> tuple[list[Any], int]:
    """Ids in the policy's archive files (each checked against its .sha256 sidecar)."""
    found: list[Any] = []
    files = sorted((root / policy).rglob("*.jsonl"))
    for f in files:
        digest = f.with_suffix(".jsonl.sha256").read_text().split()[0]
        assert hashlib.sha256(f.read_bytes()).hexdigest() == digest
        found += [json.loads(line)["id"] for line in f.read_text().splitlines() if line]
    return found, len(files)


@pytest.fixture
async def sample_db(store_url: str) -> Any:
    db = Database(store_url, timeout_s=60)
    await db.migrate()
    data = await generate(db, TICK, ROWS, holds=[HELD])
    yield db, data
    await db.dispose()


async def test_each_policy_removes_exactly_what_it_should(sample_db: Any, tmp_path: Path) -> None:
    db, data = sample_db
    config = load_retention(config_for(tmp_path, [HELD]))
    notices: list[Any] = []

    async def notify(rule: Rule, rows: Any, tick_ms: int) -> None:
        notices.extend(r["id"] for r in rows)

    archive = tmp_path / "archive"
    engine = RetentionEngine(db, config, archive_dir=archive, notify=notify)
    want = expected(data)
    tmp = tmp_path / "tmp-uploads"
    tmp.mkdir()
    for i in range(20):
        f = tmp / f"upload-{i}.part"
        f.write_bytes(b"x")
        age_s = 3600 * (48 if i % 2 else 2)
        os.utime(f, (TICK / 1000 - age_s, TICK / 1000 - age_s))

    # dry-run first: reports counts, touches nothing (tables, files, the runs table)
    before = await snapshot(db)
    dry = {
        p: await engine.run(p, run_id=f"dry-{p}", tick_ms=TICK, dry_run=True)
        for p in config.policies
    }
    assert await snapshot(db) == before
    assert len(list(tmp.iterdir())) == 20 and not archive.exists()
    async with db.transaction(write=False) as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(retention_runs))
        ).scalar() == 0
    by_rule = {r.rule: r.matched for rep in dry.values() for r in rep.rules}
    assert by_rule["old_read_messages"] == len(data["chat_messages"]) - len(want["chat_messages"])
    assert by_rule["archive_critical"] == len(want["critical_archived"])
    assert by_rule["temp_uploads"] == 10 and by_rule["deletion_notice"] == len(want["notified"])

    reports = {p: await engine.run(p, run_id=f"run-{p}", tick_ms=TICK) for p in config.policies}
    for table in ("chat_messages", "sessions", "refresh_tokens", "audit_logs", "notifications"):
        assert await ids(db, table) == want[table], table
    # audit logs: every critical one archived (verified file) before it was deleted
    archived, _ = archived_ids(archive, "audit_logs")
    assert sorted(archived) == sorted(want["critical_archived"])
    assert reports["audit_logs"].rules[0].counts["archived"] == len(want["critical_archived"])
    # payments: none deleted; the old ones archived to files and marked
    assert await ids(db, "payment_records") == {r["id"] for r in data["payment_records"]}
    assert (
        await ids(db, "payment_records", "archived_at_ms IS NOT NULL") == want["payments_archived"]
    )
    assert sorted(archived_ids(archive, "payment_records")[0]) == sorted(want["payments_archived"])
    # inactive accounts: notices sent, deletions only 30 days after a notice, orders anonymised
    assert sorted(notices) == sorted(want["notified"])
    accounts = {a["id"] for a in data["accounts"]}
    assert await ids(db, "accounts") == accounts - want["deleted_accounts"]
    assert HELD in await ids(db, "accounts")
    assert await ids(db, "orders") == {o["id"] for o in data["orders"]}  # none deleted
    assert await ids(db, "orders", "anonymized_at_ms IS NOT NULL") == want["anonymized_orders"]
    assert await ids(db, "orders", "customer_email IS NULL") == want["anonymized_orders"]
    assert want["anonymized_orders"], "the sample has orders of deleted accounts"
    # temp files: the 10 older than 24 h are gone
    assert sorted(p.name for p in tmp.iterdir()) == sorted(
        f"upload-{i}.part" for i in range(0, 20, 2)
    )
    # counts are exact and a second delivery of the same runs changes nothing
    assert reports["chat_messages"].totals()["deleted"] == by_rule["old_read_messages"]
    after = await snapshot(db)
    again = {p: await engine.run(p, run_id=f"run-{p}", tick_ms=TICK) for p in config.policies}
    assert await snapshot(db) == after
    assert {p: r.totals() for p, r in again.items()} == {p: r.totals() for p, r in reports.items()}


async def test_a_run_killed_midway_and_delivered_again_ends_the_same(
    sample_db: Any, store_url: str, tmp_path: Path
) -> None:
    db, data = sample_db
    path = config_for(tmp_path, [HELD])
    archive = tmp_path / "archive"
    want = expected(data)
    cmd = [
        sys.executable,
        "-m",
        "tests.support.retention_run",
        store_url,
        str(path),
        str(archive),
        "audit_logs",
        "run-1",
        str(TICK),
        "20",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    r = retention_runs
    try:
        deadline = time.monotonic() + 60
        batches = 0
        while batches < 5 and time.monotonic() < deadline and proc.poll() is None:
            async with db.transaction(write=False) as conn:
                batches = int(
                    (
                        await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(r.c.batches), 0)))
                    ).scalar_one()
                )
        proc.send_signal(signal.SIGKILL)  # after 5 committed batches, whatever it is doing
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    async with db.transaction(write=False) as conn:
        states = dict((await conn.execute(sa.select(r.c.rule, r.c.status))).all())
    assert states.get("delete_old") != "done"  # killed midway
    engine = RetentionEngine(db, load_retention(path), archive_dir=archive)
    report = await engine.run("audit_logs", run_id="run-1", tick_ms=TICK, batch_size=20)
    assert await ids(db, "audit_logs") == want["audit_logs"]
    archived, _ = archived_ids(archive, "audit_logs")
    assert sorted(set(archived)) == sorted(want["critical_archived"])
    deleted = len(data["audit_logs"]) - len(want["audit_logs"])
    totals = report.totals()
    assert totals["deleted"] == deleted  # never double-counted across the two deliveries
    assert totals["archived"] == len(want["critical_archived"])


def test_bad_config_names_rule_and_field() -> None:
    from streams.errors import ConfigError
    from streams.retention.rules import parse_retention

    bad = {
        "policies": {
            "p": {
                "rules": [
                    {
                        "name": "r",
                        "why": "x",
                        "action": "archive",
                        "table": "t",
                        "timestamp_column": "ts",
                        "older_than": "1d",
                    }
                ]
            }
        }
    }
    with pytest.raises(ConfigError, match=r"policies\.p\.rules\.0: .*mark_column"):
        parse_retention(bad, "retention.yaml")
    assert isinstance(load_retention(REPO / "retention.yaml"), RetentionConfig)
