"""HTTP ingest against the real broker through a real ``streams api`` process.

One API process per module (its own topic prefix); every assertion about what was
published counts or reads the records on the audit family's main topic.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from confluent_kafka import Consumer, TopicPartition
from tests.conftest import delete_topics_of
from tests.support.api import SECRET, ApiProcess, bearer, provision, running_api, token

from streams.broker.watermarks import watermarks
from streams.serde import SchemaStore
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
HTTP_TIMEOUT_S = 60.0
BATCH = 500
TOTAL = 10_000
CONCURRENT_BATCHES = 4
ACME = bearer(token(["producer"], "acme"))


def admin_action(i: int | str, **over: Any) -> dict[str, Any]:
    payload = {"subject_id": f"subject-{i}", "actor_id": "tests", "action": "probe"}
    return {"event_type": "audit.admin_action", "payload": {**payload, **over}}


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, replication_factor_override=1
    )
    provision(settings, ["audit", "email"])  # email: the family with priority lanes
    try:
        with running_api(
            settings, tmp_path_factory.mktemp("api-ingest"), families=("audit", "email")
        ) as process:
            yield process
    finally:
        delete_topics_of(kafka_bootstrap, (prefix,))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def main_topic(api: ApiProcess) -> str:
    return f"{api.settings.topic_prefix}audit"


def _consumer(api: ApiProcess) -> Consumer:
    return Consumer({"bootstrap.servers": api.settings.bootstrap, "group.id": "unused"})


def records_on_topic(api: ApiProcess) -> int:
    consumer = _consumer(api)
    try:
        topic = main_topic(api)
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = watermarks(consumer, TopicPartition(topic, p), 30.0)
            total += high - low
        return total
    finally:
        consumer.close()


def read_record(api: ApiProcess, partition: int, offset: int) -> dict[str, Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": api.settings.bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(main_topic(api), partition, offset)])
        message = consumer.poll(30)
        assert message is not None and message.error() is None
        store = SchemaStore.load(REPO / "schemas")
        value = message.value()
        assert value is not None
        return store.decode_event(value).model_dump()
    finally:
        consumer.close()


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    raw: bytes | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    encoded = raw if raw is not None else json.dumps(body).encode()
    data = io.BytesIO(encoded) if len(encoded) > 1_000_000 else encoded  # aiohttp's advice
    sent = {"Content-Type": "application/json", **(headers if headers is not None else ACME)}
    async with http.post(url, data=data, headers=sent) as response:
        return response.status, await response.json(content_type=None), response


async def test_one_event_is_acked_with_its_position_and_the_tenant_of_the_token(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, f"{api.url}/v1/events", admin_action("one"))
    assert status == 202, body
    assert set(body) == {"event_id", "topic", "partition", "offset"}
    assert body["topic"] == main_topic(api)
    event = read_record(api, body["partition"], body["offset"])
    assert event["envelope"]["event_id"] == body["event_id"]
    assert event["envelope"]["tenant_id"] == "acme"
    assert event["envelope"]["producer"] == "streams-api"
    assert event["subject_id"] == "subject-one"


async def test_the_tenant_cannot_be_forged_in_the_body(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    before = records_on_topic(api)
    forged = {**admin_action("forged"), "tenant_id": "globex"}
    status, body, response = await post(http, f"{api.url}/v1/events", forged)
    assert status == 422 and response.content_type == "application/problem+json"
    assert [e["field"] for e in body["errors"]] == ["tenant_id"], body
    envelope = admin_action("forged", envelope={"tenant_id": "globex"})
    status, body, _ = await post(http, f"{api.url}/v1/events", envelope)
    assert status == 422 and body["errors"][0]["field"] == "envelope", body
    assert records_on_topic(api) == before


async def test_invalid_events_name_index_field_and_reason_and_nothing_is_sent(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    before = records_on_topic(api)
    events = [
        admin_action(0),
        admin_action(1, actor_id=""),
        {"event_type": "nope.x", "payload": {}},
    ]
    status, body, response = await post(http, f"{api.url}/v1/events:batch", {"events": events})
    assert status == 422, body
    assert response.content_type == "application/problem+json"
    assert body["type"] == "urn:streams:problem:invalid-event"
    fields = {(e["index"], e["field"]) for e in body["errors"]}
    assert fields == {(1, "actor_id"), (2, "event_type")}, body
    assert records_on_topic(api) == before


async def test_wrong_content_type_bad_json_and_oversize_bodies(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    url = f"{api.url}/v1/events"
    text = {**ACME, "Content-Type": "text/plain"}
    status, body, _ = await post(http, url, None, text, raw=b"{}")
    assert status == 415, body
    status, body, _ = await post(http, url, None, raw=b"{not json")
    assert (status, body["type"]) == (400, "urn:streams:problem:invalid-json")
    many = {"events": [admin_action(i) for i in range(BATCH + 1)]}
    status, body, _ = await post(http, f"{api.url}/v1/events:batch", many)
    assert (status, body["type"]) == (413, "urn:streams:problem:too-many-events")
    huge = admin_action("huge", action="x" * 200, details={"blob": "y" * 2_000_000})
    status, body, _ = await post(http, url, huge)
    assert status == 413, body


async def test_same_idempotency_key_publishes_once_and_another_body_is_409(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    url = f"{api.url}/v1/events"
    key = {**ACME, "Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    before = records_on_topic(api)
    first = await post(http, url, admin_action("idem"), key)
    second = await post(http, url, admin_action("idem"), key)
    assert first[0] == second[0] == 202, (first[1], second[1])
    assert first[1] == second[1]
    assert first[1]["event_id"] == f"acme/{key['Idempotency-Key']}"
    assert second[2].headers.get("Idempotent-Replayed") == "true"
    assert records_on_topic(api) == before + 1
    status, body, _ = await post(http, url, admin_action("other body"), key)
    assert (status, body["type"]) == (409, "urn:streams:problem:idempotency-conflict")
    assert records_on_topic(api) == before + 1


async def test_ten_thousand_events_in_batches_are_all_acknowledged(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    before = records_on_topic(api)
    gate = asyncio.Semaphore(CONCURRENT_BATCHES)

    async def one_batch(start: int) -> list[dict[str, Any]]:
        events = [admin_action(i) for i in range(start, start + BATCH)]
        async with gate:
            status, body, _ = await post(http, f"{api.url}/v1/events:batch", {"events": events})
        assert status == 202, body
        results: list[dict[str, Any]] = body["results"]
        return results

    batches = await asyncio.gather(*(one_batch(s) for s in range(0, TOTAL, BATCH)))
    results = [r for batch in batches for r in batch]
    assert len(results) == TOTAL
    assert len({r["event_id"] for r in results}) == TOTAL
    assert len({(r["partition"], r["offset"]) for r in results}) == TOTAL
    assert records_on_topic(api) == before + TOTAL


async def test_concurrent_requests_with_one_key_publish_once(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    url = f"{api.url}/v1/events:batch"
    key = {**ACME, "Idempotency-Key": f"burst-{uuid.uuid4().hex}"}
    body = {"events": [admin_action("c1"), admin_action("c2")]}
    before = records_on_topic(api)
    answers = await asyncio.gather(*(post(http, url, body, key) for _ in range(5)))
    assert {status for status, _, _ in answers} == {202}
    assert len({json.dumps(b, sort_keys=True) for _, b, _ in answers}) == 1
    assert records_on_topic(api) == before + 2


async def test_no_cors_headers_and_no_credentials_in_the_log(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    headers = {**ACME, "Origin": "https://evil.example"}
    status, _, response = await post(http, f"{api.url}/v1/events", admin_action("cors"), headers)
    assert status == 202
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    log = api.process.log_path.read_text()
    assert "POST /v1/events" in log  # the access log is there ...
    assert SECRET not in log and ACME["Authorization"].split()[1] not in log  # ... no secrets


async def test_metrics_count_requests_by_route_template_method_and_status(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    await post(http, f"{api.url}/v1/events", admin_action("metrics"))
    async with http.get(f"{api.url}/v1/events/unknown-id", headers=ACME) as response:
        assert response.status in (404, 405)
    async with http.get(f"{api.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'streams_api_requests_total{method="POST",route="/v1/events",status="202"}' in text
    assert 'streams_api_request_duration_seconds_count{method="POST",route="/v1/events"}' in text
    assert "unknown-id" not in text  # the route's template, never the raw path


async def test_a_delayed_event_waits_on_a_retry_tier_with_its_due_time(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    """``delay_s`` / ``not_before`` in the body (issue 11): stored on the tier, due later."""
    from streams.core import headers as h

    before_ms = int(__import__("time").time() * 1000)
    status, body, _ = await post(
        http, f"{api.url}/v1/events", {**admin_action("later"), "delay_s": 3600}
    )
    assert status == 202, body
    assert body["topic"] != main_topic(api) and ".retry." in body["topic"]
    consumer = _consumer(api)
    try:
        consumer.assign([TopicPartition(body["topic"], body["partition"], body["offset"])])
        message = consumer.poll(30)
        assert message is not None and message.error() is None
        due_ms = h.int_header(h.decode(message.headers() or []), h.DUE_AT_MS, -1)
    finally:
        consumer.close()
    assert due_ms >= before_ms + 3_600_000
    status, body, _ = await post(
        http, f"{api.url}/v1/events", {**admin_action("x"), "not_before": "2020-01-01T00:00:00"}
    )
    assert status == 422 and "not_before" in json.dumps(body), body
    status, body, _ = await post(
        http, f"{api.url}/v1/events", {**admin_action("x"), "delay_s": 40 * 86_400}
    )
    assert status == 422 and "delay_s" in json.dumps(body), body


async def test_a_priority_publishes_to_the_lane_topic_and_a_bad_one_is_422(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    from streams.core import headers as h

    prefix = api.settings.topic_prefix
    mail = {"user_id": "u1", "to": "u1@example.com", "locale": "en", "template": "welcome"}
    urgent = {"event_type": "email.requested", "payload": mail, "priority": "high"}
    before = records_on_topic(api)
    bad = [urgent, {**urgent, "priority": "urgent"}, {**admin_action(0), "priority": "high"}]
    status, body, _ = await post(http, f"{api.url}/v1/events:batch", {"events": bad})
    assert status == 422, body
    errors = {(e["index"], e["field"]): e["reason"] for e in body["errors"]}
    assert set(errors) == {(1, "priority"), (2, "priority")}, body
    assert errors[(1, "priority")].endswith("its lanes are high, normal, low")
    assert "family 'audit' has no priority lanes" in errors[(2, "priority")]
    status, body, _ = await post(http, f"{api.url}/v1/events", {**urgent, "priority": ""})
    assert status == 422 and body["errors"][0]["field"] == "priority", body
    assert records_on_topic(api) == before
    plain = {"event_type": "email.requested", "payload": mail}
    status, body, _ = await post(http, f"{api.url}/v1/events:batch", {"events": [urgent, plain]})
    assert status == 202, body
    first, second = body["results"]
    assert (first["topic"], second["topic"]) == (f"{prefix}email.lane.high", f"{prefix}email")
    consumer = _consumer(api)
    try:
        consumer.assign([TopicPartition(first["topic"], first["partition"], first["offset"])])
        message = consumer.poll(30)
        assert message is not None and message.error() is None
        assert h.decode(message.headers() or [])[h.LANE] == "high"
    finally:
        consumer.close()
