"""Operator endpoints on real parts: the session broker, two real worker processes sending
heartbeats, the API over real HTTP.

One scenario (workers are slow to start, so the steps share them): heartbeats list both
workers; a failing dependency opens its circuit and ``/v1/breakers`` shows it; a clear is
refused while workers run; with the workers stopped a backlog shows as lag and oldest age;
the clear records the skipped ranges, moves the group past them (a restarted worker does not
run them) and the replay runs them; every admin action is in the audit family's topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner
from pydantic import SecretStr
from tests.support.engine import WorkerProcess, provision, read_topic, write_catalog

from streams.api.app import create_app
from streams.api.auth_setup import build_authenticator
from streams.api.settings import ApiSettings
from streams.broker.offsets import ClusterOffsets
from streams.broker.skipped import read_clears
from streams.catalog import Catalog
from streams.cli import cli
from streams.core import topology
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.store.settings import StoreSettings

SECRET = "ops-integration-secret-" + "x" * 32
ISS, AUD = "https://issuer.test", "streams-api"
AUDIT: dict[str, Any] = {
    "partitions": 2,
    "concurrency": 8,
    "handler_timeout": "10s",
    "retry": {"delays": ["1s"], "max_attempts": 2, "jitter": 0.0, "retention": "1d"},
    "circuit_breaker": {"failure_threshold": 2, "cooldown": "1h"},
    "rate_limits": [],
}


def auth(roles: list[str], sub: str = "ops-admin") -> dict[str, str]:
    claims = {"sub": sub, "roles": roles, "iss": ISS, "aud": AUD, "exp": int(time.time()) + 3600}
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, "HS256")}


ADMIN, VIEWER = auth(["admin"]), auth(["viewer"], "ops-viewer")


@dataclass
class Rig:
    url: str
    http: aiohttp.ClientSession
    settings: Settings
    catalog: Catalog
    publisher: Publisher
    runs: Path
    start: Callable[[str], WorkerProcess]

    async def call(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    def ran(self) -> list[str]:
        return self.runs.read_text().split() if self.runs.exists() else []

    def publish(self, subject: str, n: int, **details: str) -> list[str]:
        ids = []
        for i in range(n):
            payload = {
                "subject_id": subject,
                "actor_id": f"a{i}",
                "amount_minor": i,
                "details": details,
            }
            ids.append(self.publisher.publish("audit.claim_submitted", payload).event_id)
        return ids


async def until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
def audit_family() -> dict[str, Any]:
    return AUDIT


@pytest.fixture
async def rig(
    make_settings: Callable[..., Settings], tmp_path: Path, audit_family: dict[str, Any]
) -> AsyncIterator[Rig]:
    settings = make_settings(
        catalog_path=write_catalog(tmp_path, {"audit": audit_family}), heartbeat_interval_s=0.5
    )
    catalog = provision(settings)
    runs = tmp_path / "runs.txt"
    workers: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        w = WorkerProcess(
            settings,
            ["audit"],
            runs,
            tmp_path / f"{name}.log",
            worker_id=name,
            handlers="tests.support.ops_handlers",
            extra_env={"STREAMS_WORKER_ID": "", "STREAMS_HEARTBEAT_INTERVAL_S": "0.5"},
        )
        workers.append(w.start())
        return w

    api_settings = ApiSettings(
        api_jwt_secret=SecretStr(SECRET), api_jwt_issuer=ISS, api_jwt_audience=AUD
    )
    authenticator, _ = build_authenticator(api_settings)
    store = StoreSettings(database_url=f"sqlite:///{tmp_path / 'store.db'}", home=tmp_path)
    app = create_app(api_settings, store, authenticator, kafka=settings, catalog=catalog)
    publisher = Publisher(settings, catalog=catalog)
    try:
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            yield Rig(
                str(server.make_url("")).rstrip("/"),
                http,
                settings,
                catalog,
                publisher,
                runs,
                start,
            )
    finally:
        publisher.close()
        for w in workers:
            w.stop()


def audit_actions(settings: Settings) -> list[dict[str, Any]]:
    from streams.serde.store import SchemaStore

    store = SchemaStore.load(settings.schemas_dir)
    out = []
    for msg in read_topic(settings, topology.main_topic(settings.topic_prefix, "audit"), 2):
        event = store.decode_event(msg.value())
        if event.EVENT_TYPE == "audit.admin_action":
            out.append(event.model_dump())
    return out


def cli_env(s: Settings) -> dict[str, str]:
    return {
        "STREAMS_KAFKA_BOOTSTRAP": s.bootstrap,
        "STREAMS_TOPIC_PREFIX": s.topic_prefix,
        "STREAMS_APP_ID": s.app_id,
        "STREAMS_CATALOG_PATH": str(s.catalog_path),
        "STREAMS_HOME": str(s.home),
    }


async def test_heartbeats_breakers_backlog_clear_and_replay(rig: Rig) -> None:
    w1, w2 = rig.start("w1"), rig.start("w2")
    await asyncio.gather(asyncio.to_thread(w1.wait_ready), asyncio.to_thread(w2.wait_ready))

    async def both_workers() -> bool:
        status, body = await rig.call("GET", "/v1/families/audit", VIEWER)
        return status == 200 and len(body["workers"]) == 2

    await until(both_workers, 30, "both workers' heartbeats holding audit partitions")
    status, body = await rig.call("GET", "/v1/families", VIEWER)
    assert status == 200 and [f["family"] for f in body["families"]] == ["audit"]
    assert set(body["families"][0]["owners"]) == {"0", "1"}

    # a failing dependency: two failures in one worker open its circuit
    rig.publish("dep-subject", 3, dep="ledgerdb:5432")

    async def open_circuit() -> dict[str, str] | None:
        _, body = await rig.call("GET", "/v1/breakers", VIEWER)
        for row in body["breakers"]:
            if row["dependency"] == "ledgerdb:5432" and "open" in row["workers"].values():
                return dict(row["workers"])
        return None

    states = await until(open_circuit, 30, "an open circuit in /v1/breakers")
    assert list(states.values()).count("open") == 1  # state is per worker: one key, one owner

    # a pause (helper control's route) shows in the heartbeats of both workers, and leaves
    OPERATOR = auth(["operator"], "ops-operator")
    actions_ms = int(time.time() * 1000)  # the first admin action audited into the family
    assert (await rig.call("POST", "/v1/families/audit:pause", OPERATOR))[0] == 200

    async def paused(flag: bool) -> bool:
        _, body = await rig.call("GET", "/v1/families/audit", VIEWER)
        return bool(body["paused"] is flag)

    await until(lambda: paused(True), 30, "the pause in the heartbeats")
    assert (await rig.call("POST", "/v1/families/audit:resume", OPERATOR))[0] == 200
    await until(lambda: paused(False), 30, "the resume in the heartbeats")

    # a clear while workers run: refused by the empty-group rule, and audited
    status, body = await rig.call("POST", "/v1/families/audit:clear", ADMIN)
    assert status == 409 and body["type"].endswith("group-active"), body
    assert (await rig.call("POST", "/v1/families/audit:clear", VIEWER))[0] == 403
    env = cli_env(rig.settings)
    args = ["families", "clear", "audit", "--actor", "ops-cli", "--yes"]
    refused = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert refused.exit_code == 1 and "member(s)" in refused.output, refused.output

    w1.stop()
    w2.stop()
    offsets = ClusterOffsets(rig.settings, rig.settings.app_id)
    try:
        await until(lambda: offsets.members() == 0, 30, "the worker group to be empty")
    finally:
        offsets.close()
    backlog = rig.publish("backlog", 5)
    published_by_ms = int(time.time() * 1000)

    asked_ms = int(time.time() * 1000)
    status, family = await rig.call("GET", "/v1/families/audit", VIEWER)
    answered_ms = int(time.time() * 1000)
    assert status == 200
    main = next(t for t in family["topics"] if t["role"] == "main")
    assert main["lag"] >= 5  # and any admin_action event the stopped workers had not read
    age = main["oldest_unprocessed_age_ms"]
    # the oldest pending record is the backlog's, or the audit event of an admin action
    # (pause, resume, the refused clears) the workers had not read when they stopped (a
    # loaded machine: the resume's was still unread once)
    assert age is not None
    assert asked_ms - published_by_ms <= age <= answered_ms - actions_ms
    assert family["in_flight"] == 0 and family["workers"] == []  # tombstones on clean stop

    status, cleared = await rig.call("POST", "/v1/families/audit:clear", ADMIN)
    assert status == 200, cleared
    main_ranges = [r for r in cleared["ranges"] if r["topic"] == main["topic"]]
    assert sum(r["to"] - r["from"] for r in main_ranges) == main["lag"]
    assert cleared["skipped"] == family["lag"]
    _, after = await rig.call("GET", "/v1/families/audit", VIEWER)
    committed = {
        (t["topic"], p["partition"]): p["committed"]
        for t in after["topics"]
        for p in t["partitions"]
    }
    # the group now stands at the end of every skipped range (the clear's own audit event,
    # published to this same audit family afterwards, is the only thing pending)
    assert all(committed[(r["topic"], r["partition"])] == r["to"] for r in cleared["ranges"])
    assert after["lag"] <= 1

    recorded = read_clears(rig.settings, topology.skipped_topic(rig.settings.topic_prefix))
    assert [c.clear_id for c in recorded] == [cleared["clear_id"]]
    assert recorded[0].skipped == cleared["skipped"] and recorded[0].actor == "ops-admin"

    # a restarted worker does not run the skipped events: a marker published after them runs
    w3 = rig.start("w3")
    await asyncio.to_thread(w3.wait_ready)
    marker = rig.publish("marker", 1)
    await until(lambda: set(marker) <= set(rig.ran()), 30, "the marker event to run")
    assert not set(backlog) & set(rig.ran())

    args = ["families", "replay-skipped", "audit", "--actor", "ops-cli"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert f"{cleared['skipped']} record(s) published again" in result.output
    await until(lambda: set(backlog) <= set(rig.ran()), 30, "the replayed backlog to run")
    [again] = read_clears(rig.settings, topology.skipped_topic(rig.settings.topic_prefix))
    assert again.outcome == "replayed"

    actions = [
        (a["action"], a["subject_id"], a["actor_id"], a["details"]["outcome"])
        for a in audit_actions(rig.settings)
    ]
    assert ("family.clear", "family/audit", "ops-admin", "refused:409") in actions
    assert ("family.clear", "family/audit", "ops-admin", "ok") in actions
    assert ("family.replay_skipped", "family/audit", "ops-cli", "ok") in actions
    assert ("family.clear", "family/audit", "ops-cli", "refused:GroupActive") in actions


PER_SUBJECT = {
    "name": "per_subject",
    "scope": "key",
    "limit": 2,
    "per": "1h",
    "on_exceed": "defer",
    "max_defer": "2h",
}


@pytest.mark.parametrize(
    "audit_family",
    [{**AUDIT, "retry": {**AUDIT["retry"], "retention": "1d"}, "rate_limits": [PER_SUBJECT]}],
)
async def test_rate_limit_status_reset_and_stats_of_a_known_workload(rig: Rig) -> None:
    worker = rig.start("w1")
    await asyncio.to_thread(worker.wait_ready)
    limited = rig.publish("rl-1", 3)  # 2 run, the third is deferred (and reserves a token)
    failing = rig.publish("dep-1", 1, dep="ledgerdb:5432")  # retried once, then dead-lettered
    await until(lambda: len(set(limited) & set(rig.ran())) == 2, 30, "two rl-1 events to run")
    await until(lambda: rig.ran().count(failing[0]) == 2, 30, "both attempts of the failing one")

    async def bucket(key: str) -> dict[str, Any]:
        status, body = await rig.call("GET", f"/v1/ratelimits/audit/{key}", VIEWER)
        assert status == 200, body
        [b] = body["buckets"]
        return dict(b)

    async def in_debt() -> bool:
        return bool((await bucket("rl-1"))["tokens"] <= -0.99)  # 2 spent + 1 reserved, of 2

    await until(in_debt, 30, "the spent bucket in the changelog")
    b = await bucket("rl-1")
    assert b["limited"] and b["capacity"] == 2 and b["next_token_in_ms"] > 0
    fresh = await bucket("rl-unused")
    assert fresh["tokens"] == 2 and fresh["updated_ms"] is None and not fresh["limited"]

    tenant_claims = {
        "sub": "acme-admin",
        "roles": ["admin"],
        "tenant": "acme",
        "iss": ISS,
        "aud": AUD,
        "exp": int(time.time()) + 3600,
    }
    tenant_admin = {"Authorization": "Bearer " + jwt.encode(tenant_claims, SECRET, "HS256")}
    assert (await rig.call("POST", "/v1/ratelimits/audit/rl-1:reset", tenant_admin))[0] == 403
    assert (await rig.call("POST", "/v1/ratelimits/audit/rl-1:reset", VIEWER))[0] == 403
    status, issued = await rig.call("POST", "/v1/ratelimits/audit/rl-1:reset", ADMIN)
    assert status == 202 and issued["command"] == "ratelimit-reset/audit/rl-1", issued

    async def refilled() -> bool:
        return bool((await bucket("rl-1"))["tokens"] == 2)

    await until(refilled, 30, "the owning worker to refill the bucket")

    def claim_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((r for r in rows if r["event_type"] == "audit.claim_submitted"), None)

    async def settled() -> dict[str, Any] | None:
        status, body = await rig.call("GET", "/v1/stats?window=1h&tenant=*", ADMIN)
        assert status == 200, body
        row = claim_row(body["by_type"])
        return row if row and row["completed"] == 2 and row["dead_lettered"] == 1 else None

    row = await until(settled, 30, "the statistics of the workload")
    assert (row["retries"], row["failures"], row["deferred"]) == (1, 2, 1)
    assert row["avg_wait_ms"] is not None and row["avg_processing_ms"] is not None
    status, day = await rig.call("GET", "/v1/stats?window=1d&tenant=*", ADMIN)
    day_row = claim_row(day["by_type"])
    assert status == 200 and day_row is not None
    same = ("completed", "retries", "dead_lettered", "deferred", "avg_wait_ms")
    assert {k: day_row[k] for k in same} == {k: row[k] for k in same}  # the same records
    assert (await rig.call("GET", "/v1/stats?window=2h&tenant=*", ADMIN))[0] == 400
    actions = [
        (a["action"], a["subject_id"], a["details"]["outcome"]) for a in audit_actions(rig.settings)
    ]
    assert ("ratelimit.reset", "ratelimit/audit/rl-1", "ok") in actions
