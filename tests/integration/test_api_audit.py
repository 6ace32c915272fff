# ruff: noqa: F811  (the store_url and postgres_server fixtures are imported by name)
"""``GET /v1/audit`` and the health probes over real HTTP, against SQLite and PostgreSQL,
with rows of two tenants (and one without a tenant) written by the audit job itself."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from tests.support.postgres import postgres_server, store_url  # noqa: F401 - fixtures

from streams.api.app import create_app
from streams.api.auth import hash_api_key
from streams.api.auth_setup import build_authenticator
from streams.api.settings import ApiSettings
from streams.cli_api import ACCESS_LOG_FORMAT
from streams.events import build_event
from streams.jobs.audit import AuditJob, AuditSettings
from streams.jobs.base import JobContext
from streams.store.settings import StoreSettings

SECRET = "integration-secret-" + "x" * 32
ISS, AUD = "https://issuer.test", "streams-api"
BASE_MS = 1_700_000_000_000
STARTUP_BOUND_S = 30.0
# (event index, tenant): handled in this order, so ids do not follow event time
ROWS = [(5, "acme"), (1, "acme"), (4, "acme"), (2, "other"), (3, "acme"), (6, "other"), (7, None)]
ACME = ["ev-1", "ev-3", "ev-4", "ev-5"]  # by event time
OTHER = ["ev-2", "ev-6"]
KEYS = {  # API key -> (principal, roles, tenant)
    "key-viewer-acme": ("svc-view", ["viewer"], "acme"),
    "key-producer-acme": ("svc-prod", ["producer"], "acme"),
    "key-admin-platform": ("svc-admin", ["admin"], None),
}


def token(
    *,
    roles: list[str],
    tenant: str | None = "acme",
    key: str = SECRET,
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "p", "roles": roles, "iss": ISS, "aud": AUD}
    # the matrix below is built at import: a day's validity outlasts any run of the suite
    claims.update({"exp": now + 86_400, **overrides})
    if tenant is not None:
        claims["tenant"] = tenant
    return jwt.encode(claims, key, "HS256")


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


@dataclass
class Api:
    url: str
    http: aiohttp.ClientSession

    async def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.http.get(self.url + path, headers=headers or {}) as response:
            body = await response.json(content_type=None)
            return response.status, body, response


async def seed(store: str, home: Path) -> None:
    job = AuditJob(AuditSettings(database_url=store, home=home), registry=CollectorRegistry())
    await job.start()
    try:
        for i, tenant in ROWS:  # one at a time: ids in handling order
            event = build_event(
                "audit.claim_submitted",
                {"subject_id": f"c{i % 2}", "actor_id": f"u{i}", "amount_minor": i},
                event_id=f"ev-{i}",
                occurred_at_ms=BASE_MS + i,
                tenant_id=tenant,
            )
            await job.handle(event, JobContext(f"ev-{i}", "audit.claim_submitted", "audit"))
    finally:
        await job.stop()


async def wait_started(api: Api) -> None:
    deadline = time.monotonic() + STARTUP_BOUND_S
    while (await api.get("/health/startup"))[0] != 200:
        assert time.monotonic() < deadline, "the API did not start within its bound"
        await asyncio.sleep(0.05)


@pytest.fixture
async def api(
    store_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Api]:
    caplog.set_level(logging.INFO)  # before the server: its access logger checks once
    await seed(store_url, tmp_path)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(
        json.dumps(
            [
                {"hash": hash_api_key(k), "principal": p, "roles": r, "tenant": t}
                for k, (p, r, t) in KEYS.items()
            ]
        )
    )
    settings = ApiSettings(
        api_jwt_secret=SECRET,
        api_jwt_issuer=ISS,
        api_jwt_audience=AUD,
        api_keys_file=keys_file,
        api_jwt_leeway_s=0,
    )
    authenticator, _ = build_authenticator(settings)
    app = create_app(settings, StoreSettings(database_url=store_url, home=tmp_path), authenticator)
    served = TestServer(app, access_log_format=ACCESS_LOG_FORMAT)
    async with served as server, aiohttp.ClientSession() as http:
        api = Api(str(server.make_url("")).rstrip("/"), http)
        await wait_started(api)
        yield api


NOW = int(time.time())
# (case, headers, query) -> expected status; the principal's tenant is acme unless named
MATRIX: list[tuple[str, dict[str, str], str, int]] = [
    ("no credential", {}, "", 401),
    ("expired", bearer(token(roles=["viewer"], exp=NOW - 120)), "", 401),
    ("not yet valid", bearer(token(roles=["viewer"], nbf=NOW + 3600)), "", 401),
    ("wrong signature", bearer(token(roles=["viewer"], key="y" * 48)), "", 401),
    ("wrong audience", bearer(token(roles=["viewer"], aud="billing")), "", 401),
    ("wrong issuer", bearer(token(roles=["viewer"], iss="https://evil.test")), "", 401),
    ("garbage token", bearer("abc.def.ghi"), "", 401),
    ("basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, "", 401),
    ("bad api key", {"X-Api-Key": "key-nobody"}, "", 401),
    (
        "both credentials",
        {**bearer(token(roles=["viewer"])), "X-Api-Key": "key-viewer-acme"},
        "",
        401,
    ),
    ("no roles", bearer(token(roles=[])), "", 403),
    ("producer", bearer(token(roles=["producer"])), "", 403),
    ("producer key", {"X-Api-Key": "key-producer-acme"}, "", 403),
]
for _role in ("viewer", "operator", "admin"):
    MATRIX += [
        (f"{_role} own", bearer(token(roles=[_role])), "", 200),
        (f"{_role} own named", bearer(token(roles=[_role])), "?tenant=acme", 200),
        (f"{_role} other", bearer(token(roles=[_role])), "?tenant=other", 403),
        (f"{_role} every", bearer(token(roles=[_role])), "?tenant=*", 403),
    ]
MATRIX += [
    ("platform viewer", bearer(token(roles=["viewer"], tenant=None)), "?tenant=acme", 403),
    ("platform operator", bearer(token(roles=["operator"], tenant=None)), "?tenant=acme", 403),
    ("platform admin unnamed", bearer(token(roles=["admin"], tenant=None)), "", 400),
    ("platform admin other", bearer(token(roles=["admin"], tenant=None)), "?tenant=other", 200),
    ("platform admin every", bearer(token(roles=["admin"], tenant=None)), "?tenant=*", 200),
    ("viewer key own", {"X-Api-Key": "key-viewer-acme"}, "", 200),
    ("viewer key other", {"X-Api-Key": "key-viewer-acme"}, "?tenant=other", 403),
    ("admin key other", {"X-Api-Key": "key-admin-platform"}, "?tenant=other", 200),
]
# what a 200 shows: the tenant's rows and nothing else
SEES = {
    "platform admin other": OTHER,
    "platform admin every": sorted([*ACME, *OTHER, "ev-7"], key=lambda e: int(e[3:])),
    "admin key other": OTHER,
}


async def test_the_authorization_matrix_gives_exactly_the_expected_status(api: Api) -> None:
    got: dict[str, Any] = {}
    for case, headers, query, _expected in MATRIX:
        status, body, response = await api.get("/v1/audit" + query, headers)
        if status == 200:
            got[case] = (status, [r["event_id"] for r in body["records"]])
        else:
            assert response.content_type == "application/problem+json", case
            assert body["status"] == status and body["type"].startswith("urn:streams:problem:")
            assert body["title"] and body["detail"], case
            if status == 401:
                challenge = response.headers["WWW-Authenticate"]
                assert challenge.startswith('Bearer realm="streams"'), case
                assert ("error=" in challenge) == (case != "no credential"), case
            got[case] = (status, None)
    expected = {
        case: (status, SEES.get(case, ACME) if status == 200 else None)
        for case, _h, _q, status in MATRIX
    }
    assert got == expected


async def test_records_carry_the_chain_and_pages_walk_every_row_once(api: Api) -> None:
    headers = bearer(token(roles=["viewer"]))
    status, body, _ = await api.get("/v1/audit", headers)
    assert status == 200 and body["next"] is None
    first = body["records"][0]
    assert {"seq", "prev_hash", "hash", "payload", "tenant_id"} <= first.keys()
    assert {r["tenant_id"] for r in body["records"]} == {"acme"}
    seen: list[str] = []
    query = "/v1/audit?limit=1"
    while True:
        status, body, _ = await api.get(query, headers)
        assert status == 200 and len(body["records"]) <= 1
        seen += [r["event_id"] for r in body["records"]]
        if body["next"] is None:
            break
        query = f"/v1/audit?limit=1&after={body['next']}"
    assert seen == ACME  # event-time order although ids were written 5, 1, 4, 3
    status, body, _ = await api.get(f"/v1/audit?since={BASE_MS + 3}&until={BASE_MS + 5}", headers)
    assert [r["event_id"] for r in body["records"]] == ["ev-3", "ev-4"]
    status, body, _ = await api.get("/v1/audit?actor=u5&subject=c1", headers)
    assert [r["event_id"] for r in body["records"]] == ["ev-5"]
    status, body, _ = await api.get("/v1/audit?event_type=audit.admin_action", headers)
    assert (status, body["records"]) == (200, [])


async def test_bad_parameters_are_400_problems_naming_them(api: Api) -> None:
    headers = bearer(token(roles=["viewer"]))
    for query, parameter in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("since=tomorrow", "since"),
        ("after=xyz", "after"),
        ("subjekt=c1", "subjekt"),
        ("actor=a&actor=b", "actor"),
    ]:
        status, body, response = await api.get(f"/v1/audit?{query}", headers)
        assert (status, body["parameter"]) == (400, parameter), query
        assert response.content_type == "application/problem+json"


async def test_routes_health_cors_and_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    viewer = token(roles=["viewer"])
    for probe in ("live", "ready", "startup"):
        status, body, _ = await api.get(f"/health/{probe}")
        assert (status, body["status"]) == (200, "ok"), probe
    status, body, _ = await api.get("/v1/nothing-here")
    assert status == 401  # a credential before the route map
    status, body, response = await api.get("/v1/nothing-here", bearer(viewer))
    assert (status, response.content_type) == (404, "application/problem+json")
    async with api.http.post(api.url + "/v1/audit", headers=bearer(viewer)) as response:
        assert response.status == 405 and "GET" in response.headers["Allow"]
    cors = {"Origin": "https://evil.test", "Access-Control-Request-Method": "GET"}
    async with api.http.options(api.url + "/v1/audit", headers=cors) as response:
        assert response.status == 401
        assert "Access-Control-Allow-Origin" not in response.headers
    status, _, response = await api.get("/v1/audit", {**bearer(viewer), "Origin": "https://x"})
    assert status == 200 and "Access-Control-Allow-Origin" not in response.headers
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("/v1/audit" in line for line in access), caplog.text  # requests logged ...
    assert viewer not in caplog.text and SECRET not in caplog.text  # ... and no credential
    assert "key-viewer-acme" not in caplog.text


async def test_an_unreachable_store_keeps_the_api_up_but_not_ready(tmp_path: Path) -> None:
    closed = aiohttp.test_utils.unused_port()
    settings = ApiSettings(api_jwt_secret=SECRET, api_jwt_issuer=ISS, api_jwt_audience=AUD)
    store = StoreSettings(
        database_url=f"postgresql://nobody@127.0.0.1:{closed}/none",
        home=tmp_path,
        db_connect_timeout_s=1,
        db_timeout_s=2,
    )
    app = create_app(settings, store, build_authenticator(settings)[0])
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        api = Api(str(server.make_url("")).rstrip("/"), http)
        assert (await api.get("/health/live"))[0] == 200
        assert (await api.get("/health/startup"))[0] == 503
        status, body, _ = await api.get("/health/ready")
        assert (status, body["checks"]["store_reachable"]) == (503, False)
        status, body, _ = await api.get("/v1/audit", bearer(token(roles=["viewer"])))
        assert (status, body["type"]) == (503, "urn:streams:problem:store-unavailable")
        assert "nobody" not in json.dumps(body)  # the URL is not shown
