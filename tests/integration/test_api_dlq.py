"""``/v1/dlq/{family}`` through a real ``streams api`` process and the real broker:
tenant-scoped reads, a dry run, delete, and a redrive run followed to its checkpoint."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from tests.conftest import delete_topics_of
from tests.support.api import ApiProcess, bearer, provision, running_api, token
from tests.support.engine import wait_for

from streams.core import headers as h
from streams.core.topology import dlq_topic, main_topic
from streams.dlq.reader import DlqReader
from streams.dlq.replay import REPLAY_ID
from streams.events import EXAMPLE_PAYLOADS, build_event
from streams.serde import SchemaStore
from streams.settings import Settings

pytestmark = pytest.mark.kafka
ACME_OPERATOR = bearer(token(["operator"], "acme"))
ACME_VIEWER = bearer(token(["viewer"], "acme"))


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, replication_factor_override=1
    )
    provision(settings, ["audit", "webhook"])
    store = SchemaStore.load(settings.schemas_dir)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, tenant in enumerate(["acme", "globex", "acme", "globex"]):
        event = build_event(
            "webhook.requested",
            EXAMPLE_PAYLOADS["webhook.requested"],
            event_id=f"evt-{i}",
            tenant_id=tenant,
        )
        headers = {
            h.EVENT_ID: f"evt-{i}",
            h.EVENT_TYPE: "webhook.requested",
            h.ORIGINAL_TOPIC: main_topic(prefix, "webhook"),
            h.ORIGINAL_PARTITION: "0",
            h.DLQ_REASON: "exhausted",
            h.FAILED_AT_MS: str(int(time.time() * 1000)),
        }
        producer.produce(
            dlq_topic(prefix, "webhook"),
            value=store.encode(event),
            key=b"sub",
            partition=0,
            headers=list(headers.items()),
        )
    assert producer.flush(15) == 0
    try:
        with running_api(
            settings, tmp_path_factory.mktemp("api-dlq"), families=("audit", "webhook")
        ) as process:
            yield process
    finally:
        delete_topics_of(kafka_bootstrap, (prefix,))


def call(
    api: ApiProcess, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        api.url + path,
        data=data,
        method=method,
        headers={**headers, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def test_dlq_routes_are_tenant_scoped_audited_and_redrive(api: ApiProcess) -> None:
    status, _ = call(api, "GET", "/v1/dlq/webhook/records", ACME_VIEWER)
    assert status == 403  # operators only
    status, page = call(api, "GET", "/v1/dlq/webhook/records", ACME_OPERATOR)
    assert status == 200, page
    assert page["matched"] == 2 and {r["tenant_id"] for r in page["records"]} == {"acme"}
    status, stats = call(api, "GET", "/v1/dlq/webhook/stats", ACME_OPERATOR)
    assert status == 200 and stats["total"] == 2 and stats["by_tenant"] == {"acme": 2}
    status, one = call(api, "GET", "/v1/dlq/webhook/records/0:1", ACME_OPERATOR)
    assert status == 404  # globex's record
    status, one = call(api, "GET", "/v1/dlq/webhook/records/0:0", ACME_OPERATOR)
    assert status == 200 and one["value"]["decoded"]["envelope"]["tenant_id"] == "acme"

    status, plan = call(api, "POST", "/v1/dlq/webhook/redrive", ACME_OPERATOR, {"dry_run": True})
    assert status == 200 and plan["sent"] == 2, plan
    status, _ = call(api, "POST", "/v1/dlq/webhook/delete", ACME_OPERATOR, {"positions": ["0:1"]})
    assert status == 404  # not acme's: nothing marked
    status, done = call(
        api, "POST", "/v1/dlq/webhook/delete", ACME_OPERATOR, {"positions": ["0:2"]}
    )
    assert status == 200 and done == {"resolved": 1}, done

    status, started = call(api, "POST", "/v1/dlq/webhook/redrive", ACME_OPERATOR, {})
    assert status == 202, started
    path = started["status"]

    def finished() -> Any:
        code, body = call(api, "GET", path, ACME_OPERATOR)
        return body if code == 200 and body["state"] != "running" else None

    checkpoint = wait_for(finished, 60, "the redrive to finish")
    assert checkpoint["state"] == "done" and checkpoint["counts"]["sent"] == 1
    settings = api.settings
    with DlqReader(settings, main_topic(settings.topic_prefix, "webhook")) as reader:
        replays = [r for r in reader.scan() if r.headers.get(REPLAY_ID) == started["redrive_id"]]
    assert [r.event_id for r in replays] == ["evt-0"]  # acme's, not the resolved one
    with DlqReader(settings, f"{settings.topic_prefix}audit") as reader:
        actions = [r for r in reader.scan() if r.event_type == "audit.admin_action"]
    assert len(actions) >= 4  # dry run, two deletes (one refused), the run

    # a canary with no worker to give it an outcome stops; resuming it finishes the run
    status, canary = call(
        api,
        "POST",
        "/v1/dlq/webhook/redrive",
        ACME_OPERATOR,
        {"canary": 1, "outcome_timeout_s": 1},
    )
    assert status == 202, canary
    stopped = wait_for(lambda: finished_at(api, canary["status"]), 60, "the canary to stop")
    assert stopped["state"] == "stopped" and "no outcome" in stopped["outcome"]
    resume = f"/v1/dlq/webhook/redrives/{canary['redrive_id']}/resume"
    status, _ = call(api, "POST", resume, bearer(token(["operator"], "globex")))
    assert status == 404  # another tenant's redrive
    status, resumed = call(api, "POST", resume, ACME_OPERATOR)
    assert status == 202, resumed
    done = wait_for(lambda: finished_at(api, canary["status"]), 60, "the resumed run")
    assert done["state"] == "done" and done["counts"]["sent"] == 1
    status, _ = call(api, "POST", resume, ACME_OPERATOR)
    assert status == 409  # done: nothing to resume


def finished_at(api: ApiProcess, path: str) -> Any:
    code, body = call(api, "GET", path, ACME_OPERATOR)
    return body if code == 200 and body["state"] != "running" and not body["running"] else None
