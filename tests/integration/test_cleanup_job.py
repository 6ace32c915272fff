"""The cleanup job in a real worker (built-in job, real broker, real SQLite sample database),
driven through ``streams schedules``: trigger a manual-only schedule, the job runs the
inactive-accounts policy, publishes the notice e-mails (deterministic ids) and one audit
event with the counts and why; pause / resume / list show in the state topic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from tests.support.engine import (
    REPO,
    TEST_AUDIT,
    WorkerProcess,
    provision,
    read_topic,
    wait_for,
    write_catalog,
)

from streams.cli import cli
from streams.retention.sample import DAY_MS, generate
from streams.serde import SchemaStore
from streams.store.database import Database

pytestmark = pytest.mark.kafka
TICK = 1_780_000_000_000
SHORT = {"retry": {"delays": ["1s", "2s"], "max_attempts": 3, "jitter": 0.0, "retention": "1d"}}


def events(settings: Any, family: str, partitions: int) -> list[Any]:
    store = SchemaStore.load(REPO / "schemas")
    topic = f"{settings.topic_prefix}{family}"
    return [store.decode_event(m.value()) for m in read_topic(settings, topic, partitions)]


def test_triggered_inactive_accounts_run_notices_deletes_and_audits(
    make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    families = {
        "cleanup": {**SHORT, "handler_timeout": "60s"},
        "audit": TEST_AUDIT,
        "email": {**SHORT, "rate_limits": []},
    }
    settings = make_settings(catalog_path=write_catalog(tmp_path, families))
    provision(settings)
    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    db = Database(db_url)

    async def prepare() -> dict[str, Any]:
        await db.migrate()
        data = await generate(db, TICK, 500, holds=["held"])
        await db.dispose()
        return data

    data = asyncio.run(prepare())
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "schedules": {
                    "accounts": {
                        "cron": "0 0 1 * *",
                        "event_type": "cleanup.due",
                        "enabled": False,
                        "payload": {"policy": "inactive_accounts", "scheduled_for_ms": TICK},
                    }
                },
            }
        )
    )
    retention = yaml.safe_load((REPO / "retention.yaml").read_text())
    retention["legal_holds"] = ["held"]
    (tmp_path / "retention.yaml").write_text(yaml.safe_dump(retention))
    env = {
        "STREAMS_DATABASE_URL": db_url,
        "STREAMS_RETENTION_PATH": str(tmp_path / "retention.yaml"),
        "STREAMS_RETENTION_ARCHIVE_DIR": str(tmp_path / "archive"),
        "STREAMS_SCHEDULES_PATH": str(schedules),
    }
    worker = WorkerProcess(
        settings,
        ["cleanup"],
        tmp_path / "ledger.db",
        tmp_path / "w.log",
        builtin_jobs=True,
        extra_env=env,
    ).start()
    try:
        worker.wait_ready(90)
        for name, value in {
            **env,
            **{
                "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
                "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
                "STREAMS_CATALOG_PATH": str(settings.catalog_path),
                "STREAMS_APP_ID": settings.app_id,
            },
        }.items():
            monkeypatch.setenv(name, value)
        runner = CliRunner()
        out = runner.invoke(cli, ["schedules", "trigger", "accounts"])
        assert out.exit_code == 0, out.output
        run_id = out.output.split()[-1]
        audit = wait_for(
            lambda: [
                e
                for e in events(settings, "audit", 3)
                if e.envelope.event_id == f"retention-run:{run_id}"
            ],
            60,
            "the audit event",
        )
        details = audit[0].details
        notified = {
            a["id"]
            for a in data["accounts"]
            if a["last_active_at_ms"] < TICK - 700 * DAY_MS
            and a["deletion_notice_at_ms"] is None
            and a["id"] != "held"
        }
        deleted = {
            a["id"]
            for a in data["accounts"]
            if a["last_active_at_ms"] < TICK - 730 * DAY_MS
            and (a["deletion_notice_at_ms"] or TICK) < TICK - 30 * DAY_MS
            and a["id"] != "held"
        }
        assert notified and deleted, "the sample must exercise both rules"
        assert details["deletion_notice.notified"] == str(len(notified))
        assert details["delete_inactive.deleted"] == str(len(deleted))
        assert "30 days after the notice" in details["delete_inactive.why"]
        notices = [
            e
            for e in events(settings, "email", 6)
            if e.envelope.event_id.startswith("retention-notice:accounts:")
        ]
        assert {e.user_id for e in notices} == notified

        # pause / resume / list: state in the schedules topic
        assert runner.invoke(cli, ["schedules", "pause", "accounts"]).exit_code == 0
        listed = runner.invoke(cli, ["schedules", "list"])
        assert "PAUSED" in listed.output and "disabled" in listed.output, listed.output
        assert runner.invoke(cli, ["schedules", "resume", "accounts"]).exit_code == 0
        assert "PAUSED" not in runner.invoke(cli, ["schedules", "list"]).output
        admin = [e for e in events(settings, "audit", 3) if e.action.startswith("schedule.")]
        assert sorted(e.action for e in admin) == [
            "schedule.pause",
            "schedule.resume",
            "schedule.trigger",
        ]
    finally:
        worker.stop()


def test_a_worker_killed_midway_resumes_the_redelivered_run_exactly(
    make_settings: Any, tmp_path: Path
) -> None:
    import sqlite3

    from streams.publish.publisher import Publisher

    families = {"cleanup": {**SHORT, "handler_timeout": "60s"}, "audit": TEST_AUDIT}
    settings = make_settings(catalog_path=write_catalog(tmp_path, families))
    catalog = provision(settings)
    path = tmp_path / "app.db"
    db = Database(f"sqlite:///{path}")

    async def prepare() -> dict[str, Any]:
        await db.migrate()
        data = await generate(db, TICK, 3000, holds=["held"])
        await db.dispose()
        return data

    data = asyncio.run(prepare())
    retention = yaml.safe_load((REPO / "retention.yaml").read_text())
    retention["legal_holds"] = ["held"]
    (tmp_path / "retention.yaml").write_text(yaml.safe_dump(retention))
    env = {
        "STREAMS_DATABASE_URL": f"sqlite:///{path}",
        "STREAMS_RETENTION_PATH": str(tmp_path / "retention.yaml"),
        "STREAMS_RETENTION_ARCHIVE_DIR": str(tmp_path / "archive"),
    }

    def worker(n: int) -> WorkerProcess:
        return WorkerProcess(
            settings,
            ["cleanup"],
            tmp_path / "ledger.db",
            tmp_path / f"w{n}.log",
            builtin_jobs=True,
            extra_env=env,
        ).start()

    def batches() -> int:
        conn = sqlite3.connect(path, timeout=30)
        try:
            return int(
                conn.execute("SELECT coalesce(sum(batches), 0) FROM retention_runs").fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    first = worker(1)
    try:
        first.wait_ready(90)
        with Publisher(settings, catalog=catalog) as pub:
            eid = pub.publish(
                "cleanup.due", {"policy": "audit_logs", "scheduled_for_ms": TICK, "batch_size": 20}
            ).event_id
        wait_for(lambda: batches() >= 5, 60, "5 committed batches")
        first.kill()  # midway: the event is not acked, its next owner gets it again
    finally:
        first.stop()
    conn = sqlite3.connect(path)
    states = dict(conn.execute("SELECT rule, status FROM retention_runs").fetchall())
    conn.close()
    assert states.get("delete_old") != "done", "the run finished before the kill"
    second = worker(2)
    try:
        second.wait_ready(90)
        audit = wait_for(
            lambda: [
                e
                for e in events(settings, "audit", 3)
                if e.envelope.event_id == f"retention-run:{eid}"
            ],
            90,
            "the audit event",
        )
    finally:
        second.stop()
    old = [
        r
        for r in data["audit_logs"]
        if r["created_at_ms"] < TICK - 365 * DAY_MS and r["actor_id"] != "held"
    ]
    critical = [r for r in old if r["severity"] == "critical"]
    details = audit[0].details
    assert details["archive_critical.archived"] == str(len(critical))  # not double-counted
    assert details["delete_old.deleted"] == str(len(old) - len(critical))
    conn = sqlite3.connect(path)
    left = {r[0] for r in conn.execute("SELECT id FROM audit_logs")}
    conn.close()
    assert left == {r["id"] for r in data["audit_logs"]} - {r["id"] for r in old}
