"""The OpenAPI document: assembled from the route modules' declarations, checked in."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from streams.api.access import public, requires
from streams.api.openapi import document, operation, render, routes, served_document
from streams.api.roles import Role

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_document_is_current() -> None:
    current = (REPO / "openapi.json").read_text()
    assert current == render(served_document()), "run `streams api openapi` and commit"


def test_document_is_valid_openapi_31() -> None:
    doc = served_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_served_route_is_in_the_document() -> None:
    doc = served_document()
    assert {"/v1/events", "/v1/events:batch", "/openapi.json", "/metrics"} <= set(doc["paths"])
    post = doc["paths"]["/v1/events"]["post"]
    assert post["x-streams-role"] == "producer"
    assert {"401", "403", "409", "413", "415", "422", "429", "503"} <= set(post["responses"])
    problem = post["responses"]["422"]["content"]
    assert list(problem) == ["application/problem+json"]
    assert doc["paths"]["/health/live"]["get"]["security"] == []


def test_a_route_without_an_operation_is_refused() -> None:
    @public
    async def bare(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/bare", bare)
    with pytest.raises(RuntimeError, match="declares no @operation"):
        routes(app)


def test_path_parameters_lose_their_regex() -> None:
    @requires(Role.VIEWER)
    @operation("one thing", ok=(200, None))
    async def thing(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get(r"/v1/things/{thing_id:[a-z]+}", thing)
    doc = document(app)
    assert list(doc["paths"]) == ["/v1/things/{thing_id}"]
    assert doc["paths"]["/v1/things/{thing_id}"]["get"]["x-streams-role"] == "viewer"
