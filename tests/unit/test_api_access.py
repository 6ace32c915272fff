"""Routes fail closed: an application with a route that declares no access is refused."""

from __future__ import annotations

import pytest
from aiohttp import web

from streams.api.access import check_declared, public, requires
from streams.api.problems import Problem, bad_parameter
from streams.api.roles import Role


async def _handler(request: web.Request) -> web.Response:
    return web.Response()


def test_an_undeclared_route_is_refused_and_declared_ones_pass() -> None:
    app = web.Application()
    app.router.add_get("/open", public(_handler))
    app.router.add_get("/viewers", requires(Role.VIEWER)(lambda r: _handler(r)))
    check_declared(app)
    app.router.add_get("/forgotten", lambda r: _handler(r))
    with pytest.raises(RuntimeError, match="/forgotten"):
        check_declared(app)


def test_problem_documents_follow_rfc_9457() -> None:
    assert bad_parameter("limit", "expected 1..10").body() == {
        "type": "urn:streams:problem:invalid-parameter",
        "title": "Bad Request",
        "status": 400,
        "detail": "limit: expected 1..10",
        "parameter": "limit",
    }
    response = Problem(401, "unauthorized", "x", headers={"WWW-Authenticate": "Bearer"}).response()
    assert response.content_type == "application/problem+json"
    assert (response.status, response.headers["WWW-Authenticate"]) == (401, "Bearer")
