"""The API against its contract, live over HTTP (a real ``streams api`` process and broker):

- the authorization matrix, driven by the route table (``streams.api.openapi.routes``):
  every route x {no, expired, wrong-signature token} x every role x own/other tenant gives
  exactly the status the route's ``Probe`` and ``@requires`` imply;
- schemathesis from ``/openapi.json``: no 5xx, no answer the document does not describe.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from tests.conftest import delete_topics_of
from tests.support.api import (
    ApiProcess,
    bearer,
    expired_token,
    forged_token,
    provision,
    running_api,
    token,
)
from tests.support.api_matrix import SETUPS, MatrixContext

from streams.api.openapi import RouteInfo, routes, served_app
from streams.api.roles import Role, effective_roles
from streams.settings import Settings

ROLES = [r.value for r in Role]
TENANTS = ("acme", "globex")  # the probe's resources belong to acme
SCHEMATHESIS_EXAMPLES = 60
ADMIN_ACME = bearer(token(["admin"], "acme"))
NOT_EXPRESSIBLE = [schemathesis.checks.positive_data_acceptance]
"""A schema-valid request may still be refused with a documented 4xx: the document cannot
say every rule (an ISO time that is a real time, an event type the catalog knows, a
payload valid for its type, another tenant's name). Every other check stays on: no 5xx,
statuses, content types, headers and bodies as documented, negative data refused."""


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    broker = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, replication_factor_override=1
    )
    provision(broker, ["audit"])
    try:
        with running_api(broker, tmp_path_factory.mktemp("api-contract")) as process:
            yield process
    finally:
        delete_topics_of(kafka_bootstrap, (prefix,))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def route_table() -> list[RouteInfo]:
    return routes(served_app())


def test_every_route_declares_a_probe_for_the_matrix() -> None:
    missing = [f"{r.method} {r.path}" for r in route_table() if r.operation.probe is None]
    assert not missing, f"declare Probe(...) in @operation for: {missing}"


def expected(route: RouteInfo, credential: str, tenant: str | None, role: str | None) -> int:
    probe = route.operation.probe
    assert probe is not None
    if route.access is None:
        return probe.ok
    if credential != "valid":
        return 401
    assert role is not None
    if route.access not in effective_roles([role]):
        return 403
    if tenant == "acme":
        return probe.ok
    return probe.ok if probe.other_tenant is None else probe.other_tenant


def credentials() -> list[tuple[str, str | None, str | None, dict[str, str]]]:
    """(kind, tenant, role, headers) of every credential the matrix sends."""
    out: list[tuple[str, str | None, str | None, dict[str, str]]] = [
        ("missing", None, None, {}),
        ("expired", "acme", "admin", bearer(expired_token(["admin"]))),
        ("wrong-signature", "acme", "admin", bearer(forged_token(["admin"]))),
    ]
    for role in ROLES:
        for tenant in TENANTS:
            out.append(("valid", tenant, role, bearer(token([role], tenant))))
    return out


async def send(
    http: aiohttp.ClientSession,
    url: str,
    route: RouteInfo,
    path: dict[str, str],
    headers: dict[str, str],
) -> int:
    probe = route.operation.probe
    assert probe is not None
    target = url + route.path.format(**path)
    data = None if probe.body is None else json.dumps(probe.body)
    sent = dict(headers)
    if data is not None:
        sent["Content-Type"] = "application/json"
    async with http.request(
        route.method, target, params=dict(probe.query), data=data, headers=sent
    ) as response:
        await response.read()
        return response.status


async def test_authorization_matrix(api: ApiProcess, http: aiohttp.ClientSession) -> None:
    context = MatrixContext(api.url, http, ADMIN_ACME)
    wrong: list[str] = []
    sent = 0
    for route in route_table():
        probe = route.operation.probe
        assert probe is not None
        path = dict(probe.path)
        if probe.setup is not None:
            path.update(await SETUPS[probe.setup](context))
        for kind, tenant, role, headers in credentials():
            want = expected(route, kind, tenant, role)
            got = await send(http, api.url, route, path, headers)
            sent += 1
            if got != want:
                who = f"{kind} {role or '-'}@{tenant or '-'}"
                wrong.append(f"{route.method} {route.path} as {who}: {got}, expected {want}")
    assert not wrong, "\n".join(wrong)
    assert sent == len(route_table()) * len(credentials())


def test_api_conforms_to_its_openapi_document(api: ApiProcess) -> None:
    """Every operation, positive and negative cases, with an admin of acme's token."""
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
        cases = st.one_of(*(operation.as_strategy(mode) for mode in modes))

        @given(case=cases)
        @settings(
            max_examples=SCHEMATHESIS_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def conforms(case: Any) -> None:
            case.call_and_validate(headers=ADMIN_ACME, excluded_checks=NOT_EXPRESSIBLE)

        conforms()
        checked.append(operation.label)
    # schemathesis leaves out the operation serving the document it was loaded from
    served = sorted(f"{r.method} {r.path}" for r in route_table())
    assert sorted([*checked, "GET /openapi.json"]) == served, (checked, served)
