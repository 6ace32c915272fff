"""``api.admin_audit`` over real HTTP and the real broker: an audited action's
``audit.admin_action`` event is on the audit family's topic (actor, target, outcome,
tenant) before the answer; a refused action is audited as refused; no broker, no 2xx."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr
from tests.support.api import AUDIENCE, ISSUER, SECRET, bearer, provision, token

from streams.api.access import requires
from streams.api.admin_audit import admin_action
from streams.api.app import create_app
from streams.api.auth_setup import build_authenticator
from streams.api.problems import Problem
from streams.api.roles import Role
from streams.api.settings import ApiSettings
from streams.broker.watermarks import watermarks
from streams.serde import SchemaStore
from streams.settings import Settings
from streams.store.settings import StoreSettings

REPO = Path(__file__).resolve().parents[2]
OPERATOR = bearer(token(["operator"], "acme", sub="olga"))


@requires(Role.OPERATOR)
async def pause(request: web.Request) -> web.Response:
    family = request.match_info["family"]
    async with admin_action(request, "pause", target=f"family/{family}") as audit:
        if family == "unknown":
            raise Problem(404, "unknown-family", "no such family")
        audit.details["partitions"] = "3"
    return web.json_response({"paused": family})


@pytest.fixture
def serve(tmp_path: Path) -> Callable[[Settings], Any]:
    def make(kafka: Settings) -> TestServer:
        settings = ApiSettings(
            api_jwt_secret=SecretStr(SECRET),
            api_jwt_issuer=ISSUER,
            api_jwt_audience=AUDIENCE,
            api_publish_timeout_s=1.0,
        )
        authenticator, _ = build_authenticator(settings)
        app = create_app(settings, StoreSettings(home=tmp_path), authenticator, kafka=kafka)
        app.router.add_post("/test/pause/{family}", pause)
        return TestServer(app)

    return make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def audit_events(settings: Settings, expected: int) -> list[Any]:
    topic = f"{settings.topic_prefix}audit"
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    store = SchemaStore.load(REPO / "schemas")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = sum(watermarks(consumer, TopicPartition(topic, p), 30.0)[1] for p in partitions)
        assert total == expected, f"{total} records on {topic}, expected {expected}"
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        events: list[Any] = []
        while len(events) < total:
            message = consumer.poll(30)
            assert message is not None and message.error() is None
            value = message.value()
            assert value is not None
            events.append(store.decode_event(value))
        return sorted(events, key=lambda e: e.envelope.occurred_at_ms)
    finally:
        consumer.close()


async def test_actions_are_on_the_audit_topic_with_actor_target_and_outcome(
    settings: Settings, serve: Callable[[Settings], TestServer], http: aiohttp.ClientSession
) -> None:
    provision(settings, ["audit"])
    async with serve(settings) as server:
        url = str(server.make_url("/test/pause"))
        async with http.post(f"{url}/email", headers=OPERATOR) as response:
            assert response.status == 200, await response.text()
        assert len(audit_events(settings, 1)) == 1  # on the topic when the answer came
        async with http.post(f"{url}/unknown", headers=OPERATOR) as response:
            assert response.status == 404
    done, refused = audit_events(settings, 2)
    for event, target in ((done, "family/email"), (refused, "family/unknown")):
        assert (event.actor_id, event.subject_id, event.action) == ("olga", target, "pause")
        assert event.envelope.tenant_id == "acme"
        assert event.details["via"] == "jwt"
    assert done.details["outcome"] == "ok" and done.details["partitions"] == "3"
    assert refused.details["outcome"] == "refused:404"


async def test_without_a_broker_the_action_is_answered_503_not_2xx(
    serve: Callable[[Settings], TestServer], http: aiohttp.ClientSession
) -> None:
    nowhere = Settings(kafka_bootstrap="127.0.0.1:9", publish_timeout_s=1.0)
    async with serve(nowhere) as server:
        url = str(server.make_url("/test/pause/email"))
        async with http.post(url, headers=OPERATOR) as response:
            body = await response.json(content_type=None)
            assert response.status == 503, body
            assert body["type"] == "urn:streams:problem:audit-unavailable"
