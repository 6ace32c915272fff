"""Event status, cancel and pause/resume over real HTTP: the API (aiohttp, in this process)
against the real broker and real worker processes running the ledger handlers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from tests.support.engine import TEST_AUDIT, audit_rig, read_topic

from streams.api.app import create_app
from streams.api.auth_setup import build_authenticator
from streams.api.settings import ApiSettings
from streams.catalog import load_catalog
from streams.control.model import accepted_key
from streams.control.topics import status_topic
from streams.settings import Settings
from streams.store.settings import StoreSettings

pytestmark = pytest.mark.kafka

# the second retry waits an hour: a cancel must not wait for it
AUDIT = {**TEST_AUDIT, "retry": {**TEST_AUDIT["retry"], "delays": ["1s", "1h"]}}  # type: ignore[dict-item]
SECRET = "control-api-secret-" + "x" * 32
ISS, AUD = "https://issuer.test", "streams-api"


def headers(roles: list[str], tenant: str | None = "acme") -> dict[str, str]:
    claims: dict[str, Any] = {"sub": f"{'-'.join(roles)}@{tenant}", "roles": roles}
    claims |= {"iss": ISS, "aud": AUD}
    claims["exp"] = int(time.time()) + 3600
    if tenant is not None:
        claims["tenant"] = tenant
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, "HS256")}


PRODUCER, OTHER = headers(["producer"]), headers(["producer"], "globex")
OPERATOR = headers(["operator"])


class Client:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http = url, http

    async def call(
        self, method: str, path: str, who: dict[str, str], body: Any = None
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, headers=who, json=body) as r:
            return r.status, await r.json(content_type=None)

    async def claim(self, **details: str) -> str:
        event = {
            "event_type": "audit.claim_submitted",
            "payload": {"subject_id": "c", "actor_id": "t", "details": details},
            "key": "c",
        }
        status, body = await self.call("POST", "/v1/events", PRODUCER, event)
        assert status == 202, body
        return str(body["event_id"])

    async def states_until(self, event_id: str, final: str, timeout_s: float) -> list[str]:
        """Poll the status (every 50 ms) until ``final``; the distinct states seen, in order."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while not seen or seen[-1] != final:
            assert time.monotonic() < deadline, f"{event_id}: {seen}, never {final}"
            status, body = await self.call("GET", f"/v1/events/{event_id}", PRODUCER)
            if status == 200 and (not seen or seen[-1] != body["state"]):
                seen.append(body["state"])
            await asyncio.sleep(0.05)
        return seen


async def accepted_note(settings: Settings, event_id: str) -> dict[str, Any] | None:
    """The ingest's ``accepted`` status note of ``event_id``, read from ``streams.status``."""
    topic = status_topic(settings.topic_prefix)
    parts = load_catalog(settings.catalog_path).control_plane.status_partitions
    for msg in await asyncio.to_thread(read_topic, settings, topic, parts):
        if msg.key() == accepted_key(event_id).encode():
            note: dict[str, Any] = json.loads(msg.value())
            assert note["state"] == "accepted" and note["tenant_id"] == "acme"
            return note
    return None


@pytest.fixture
async def stack(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    with audit_rig(make_settings, tmp_path, AUDIT) as rig:
        worker = rig["start"]()
        api_settings = ApiSettings(
            api_jwt_secret=SecretStr(SECRET),
            api_jwt_issuer=ISS,
            api_jwt_audience=AUD,
            api_jwt_leeway_s=0,
        )
        authenticator, _ = build_authenticator(api_settings)
        store = StoreSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/api.db", home=tmp_path)
        app = create_app(
            api_settings, store, authenticator, kafka=rig["settings"], registry=CollectorRegistry()
        )
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            await asyncio.to_thread(worker.wait_ready, 60)
            yield rig | {"api": Client(str(server.make_url("")).rstrip("/"), http), "w": worker}


async def test_status_and_cancel_over_http(stack: dict[str, Any]) -> None:
    api: Client = stack["api"]
    deadline = time.monotonic() + 20
    while (await api.call("GET", "/v1/events/nope", PRODUCER))[0] == 503:  # views loading
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (await api.call("GET", "/v1/events/nope", PRODUCER))[0] == 404
    flaky = await api.claim(fail_times="1")
    seen = await api.states_until(flaky, "done", 20)
    # "accepted" (the ingest's note) only shows if polled before the worker's first record
    assert [s for s in seen if s not in ("accepted", "running")] == ["retrying", "done"]
    assert await accepted_note(stack["settings"], flaky) is not None
    assert (await api.call("GET", f"/v1/events/{flaky}", OTHER))[0] == 404  # no leak
    status, body = await api.call("GET", f"/v1/events/{flaky}", OPERATOR)  # owner or operator
    assert status == 200 and body["state"] == "done", body
    assert (await api.call("DELETE", f"/v1/events/{flaky}", OTHER))[0] == 404
    status, body = await api.call("DELETE", f"/v1/events/{flaky}", PRODUCER)
    assert status == 409 and body["final"]["state"] == "done"

    doomed = await api.claim(fail="always")
    while len(stack["ledger"].attempts(doomed)) < 2:  # now held in the 1 h tier
        assert time.monotonic() < deadline + 40, "the second attempt never ran"
        await asyncio.sleep(0.1)
    await api.states_until(doomed, "retrying", 5)
    status, body = await api.call("DELETE", f"/v1/events/{doomed}", PRODUCER)
    assert status == 202 and body["state"] == "cancel_requested", body
    # acked as cancelled now, not in an hour
    assert (await api.states_until(doomed, "cancelled", 10))[-1] == "cancelled"
    assert len(stack["ledger"].attempts(doomed)) == 2, "a cancelled event ran again"


async def test_pause_and_resume_over_http_are_audited(stack: dict[str, Any]) -> None:
    api: Client = stack["api"]
    worker = stack["w"]
    path = "/v1/families/audit:pause"
    deadline = time.monotonic() + 20
    while (status := (await api.call("POST", path, OPERATOR))[0]) == 503:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert status == 200
    assert (await api.call("POST", "/v1/families/audit:pause", PRODUCER))[0] == 403
    assert (await api.call("POST", "/v1/families/nope:pause", OPERATOR))[0] == 404
    while worker.health()[1]["paused_families"] != ["audit"]:
        assert time.monotonic() < deadline, "the worker never reported the pause"
        await asyncio.sleep(0.1)
    assert (await api.call("POST", "/v1/families/audit:resume", OPERATOR))[0] == 200
    while worker.health()[1]["paused_families"] != []:
        assert time.monotonic() < deadline, "the worker never reported the resume"
        await asyncio.sleep(0.1)
    settings: Settings = stack["settings"]
    records = read_topic(settings, f"{settings.topic_prefix}audit", 3)
    actions = [r.value() for r in records]
    pauses = [v for v in actions if b"family.pause" in v and b"operator@acme" in v]
    assert len(pauses) == 2  # the refused one (unknown family) is audited too
    assert sum(b"family/audit" in v for v in pauses) == 1
    assert sum(b"family/nope" in v and b"refused:404" in v for v in pauses) == 1
    assert sum(b"family.resume" in v and b"family/audit" in v for v in actions) == 1
