"""The broker stops while events are being ingested over HTTP: answers turn 503 (problem
+json, with the reason) within the bounded delivery timeout, never 2xx for an event the
broker did not acknowledge; after a restart every event answered 202 is on the topic.

A dedicated ``LocalBroker`` (not the session's: this test stops it), and its own API
process with a short publish timeout. The same process checks the per-principal rate
limit (429 + Retry-After) with a low limit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from confluent_kafka import Consumer, TopicPartition
from tests.support.api import ApiProcess, bearer, provision, running_api, token
from tests.support.broker import BROKER_START_TIMEOUT_S, dedicated_broker

from streams.broker.local import LocalBroker
from streams.broker.watermarks import watermarks
from streams.serde import SchemaStore
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PUBLISH_TIMEOUT_S = 2
RATE_PER_MIN = 30
BATCH = 20
ACKED_BATCHES_BEFORE_STOP = 3
UNAVAILABLE_ANSWERS_WANTED = 2
MAX_REQUESTS_WHILE_DOWN = 15
MAX_REQUESTS_TO_RECOVER = 60
PRODUCER = bearer(token(["producer"], "acme", sub="ingester"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    with dedicated_broker(tmp_path_factory.mktemp("dedicated-broker")) as dedicated:
        yield dedicated


@pytest.fixture(scope="module")
def api(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    bootstrap = broker.status().bootstrap
    assert bootstrap is not None
    settings = Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        replication_factor_override=1,
    )
    provision(settings, ["audit"])
    extra = {
        "STREAMS_API_PUBLISH_TIMEOUT_S": str(PUBLISH_TIMEOUT_S),
        "STREAMS_API_RATE_LIMIT_PER_MIN": str(RATE_PER_MIN),
    }
    with running_api(settings, tmp_path_factory.mktemp("api-down"), extra=extra) as process:
        yield process


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # far above the bounded answer time (publish timeout + ACK_GRACE_S): a hang fails
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def batch_body(run: str, start: int) -> dict[str, Any]:
    return {
        "events": [
            {
                "event_type": "audit.admin_action",
                "payload": {"subject_id": f"{run}-{i}", "actor_id": "t", "action": "probe"},
            }
            for i in range(start, start + BATCH)
        ]
    }


async def post_batch(
    http: aiohttp.ClientSession, api: ApiProcess, body: Any, headers: dict[str, str]
) -> tuple[int, Any, str]:
    sent = {"Content-Type": "application/json", **headers}
    url = f"{api.url}/v1/events:batch"
    async with http.post(url, data=json.dumps(body), headers=sent) as response:
        return response.status, await response.json(content_type=None), response.content_type


def event_ids_on_topic(settings: Settings, topic: str) -> set[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    store = SchemaStore.load(REPO / "schemas")
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: watermarks(consumer, TopicPartition(topic, p), 30.0)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        ids: set[str] = set()
        seen = 0
        while seen < sum(ends.values()):
            message = consumer.poll(30)
            assert message is not None, f"read {seen} of {sum(ends.values())}"
            assert message.error() is None, message.error()
            value = message.value()
            assert value is not None
            ids.add(store.decode_event(value).envelope.event_id)
            seen += 1
        return ids
    finally:
        consumer.close()


async def test_stopped_broker_gives_503s_and_no_2xx_for_an_unacknowledged_event(
    broker: LocalBroker, api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    run = uuid.uuid4().hex[:6]
    acked: set[str] = set()
    answers: list[int] = []
    start = 0
    while len(answers) < ACKED_BATCHES_BEFORE_STOP:  # progress: acked batches, then stop
        status, body, _ = await post_batch(http, api, batch_body(run, start), PRODUCER)
        assert status == 202, body
        acked.update(r["event_id"] for r in body["results"])
        answers.append(status)
        start += BATCH
    assert broker.stop()
    unavailable = []
    for _ in range(MAX_REQUESTS_WHILE_DOWN):
        status, body, content_type = await post_batch(http, api, batch_body(run, start), PRODUCER)
        start += BATCH
        if status == 202:  # only ever for events the broker acknowledged before it went
            acked.update(r["event_id"] for r in body["results"])
            continue
        assert status == 503, body
        assert content_type == "application/problem+json"
        assert body["type"] == "urn:streams:problem:broker-unavailable"
        assert body["reason"], body
        acked.update(r["event_id"] for r in body.get("results", []) if "offset" in r)
        unavailable.append(body["reason"])
        if len(unavailable) == UNAVAILABLE_ANSWERS_WANTED:
            break
    assert len(unavailable) == UNAVAILABLE_ANSWERS_WANTED, "the broker is down, yet no 503s"
    async with http.get(f"{api.url}/health/ready") as response:
        ready = await response.json()
        assert (response.status, ready["checks"]["broker_reachable"]) == (503, False), ready

    broker.start(timeout_s=BROKER_START_TIMEOUT_S)
    for _ in range(MAX_REQUESTS_TO_RECOVER):  # the producer reconnects on its own
        status, body, _ = await post_batch(http, api, batch_body(run, start), PRODUCER)
        start += BATCH
        if status == 202:
            acked.update(r["event_id"] for r in body["results"])
            break
        assert status == 503, body
    else:
        pytest.fail("no 202 after the broker came back")
    on_topic = event_ids_on_topic(api.settings, f"{api.settings.topic_prefix}audit")
    missing = acked - on_topic
    assert not missing, f"{len(missing)} events answered 202 are not on the topic"
    assert len(acked) >= (ACKED_BATCHES_BEFORE_STOP + 1) * BATCH


async def test_over_the_rate_limit_is_429_with_retry_after(
    api: ApiProcess, http: aiohttp.ClientSession
) -> None:
    burst = bearer(token(["producer"], "acme", sub=f"burst-{uuid.uuid4().hex[:6]}"))
    statuses: list[int] = []
    retry_after = None
    for _ in range(RATE_PER_MIN * 2):  # unparsable bodies: the limit comes first
        sent = {"Content-Type": "application/json", **burst}
        async with http.post(f"{api.url}/v1/events", data=b"{", headers=sent) as response:
            statuses.append(response.status)
            if response.status == 429:
                retry_after = response.headers.get("Retry-After")
                assert response.content_type == "application/problem+json"
                break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {400}
    assert len(statuses) > RATE_PER_MIN  # a full bucket first
    assert retry_after is not None and int(retry_after) >= 1
    other = bearer(token(["producer"], "acme", sub=f"other-{uuid.uuid4().hex[:6]}"))
    sent = {"Content-Type": "application/json", **other}
    async with http.post(f"{api.url}/v1/events", data=b"{", headers=sent) as response:
        assert response.status == 400  # per principal: another one is not limited
