"""The OpenAPI 3.1 document, assembled from what each route module declares.

A handler declares its operation with ``@operation(...)`` next to ``@requires``/``@public``
(order free: both only mark the function). Request bodies and 2xx bodies are pydantic
models (their JSON Schemas go to ``components/schemas``); errors are RFC 9457 problems.
``document(app)`` walks ``app.router`` so the document lists exactly the routes served:
a route without ``@operation`` makes it raise (as ``check_declared`` does for access).
Every authenticated operation gets 401 and 403 answers, every operation 500 and the
``default_problems`` of the app (413, 415, ...); the rest are declared per operation.

``streams api openapi`` writes the document to ``openapi.json`` at the repository root;
a unit test checks the checked-in file equals ``document(app)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streams.api.access import access_of, public
from streams.api.middleware_types import Handler
from streams.api.problems import CONTENT_TYPE as PROBLEM_CONTENT_TYPE
from streams.api.roles import Role

__all__ = [
    "Operation",
    "Param",
    "Probe",
    "document",
    "operation",
    "operation_of",
    "render",
]

OPENAPI_VERSION = "3.1.0"
_OPERATION = "__streams_operation__"
_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{([^}:]+)(:[^}]*)?\}")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "additionalProperties": True,
}


@dataclass(frozen=True)
class Param:
    """A query, path or header parameter; ``schema`` a JSON Schema."""

    name: str
    where: Literal["query", "path", "header"]
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "description": self.description,
            "required": self.required or self.where == "path",
            "schema": dict(self.schema),
        }


@dataclass(frozen=True)
class Probe:
    """A request the authorization-matrix test sends to this route (``x-streams-probe``
    in no document: tests only). The resource, if any, belongs to the probe's own tenant;
    ``ok`` is the status for a principal with the role in that tenant, ``other_tenant``
    for one with the role in another tenant (None: same as ``ok``). ``path`` fills the
    path parameters, ``query``/``body`` the rest; ``setup`` names a coroutine
    ``async def f(ctx) -> dict[str, str]`` in the matrix test's support module that
    creates the resource and returns path parameters (e.g. an event id)."""

    ok: int
    other_tenant: int | None = None
    path: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    setup: str | None = None


@dataclass(frozen=True)
class Operation:
    """One route's contract.

    ``ok``: the success status and its body model (None: no body); ``problems``: the
    error statuses this handler itself answers, with what they mean; ``headers``: response
    headers of the success answer (name -> description).
    """

    summary: str
    ok: tuple[int, type[BaseModel] | None]
    tags: tuple[str, ...] = ()
    description: str = ""
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    body_content_type: str = "application/json"
    problems: Mapping[int, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    models: tuple[type[BaseModel], ...] = ()  # extra models referenced in descriptions
    probe: Probe | None = None  # what the authorization-matrix test sends (required there)


def operation(
    summary: str, *, ok: tuple[int, type[BaseModel] | None], **rest: Any
) -> Callable[[Handler], Handler]:
    """Mark a handler with its ``Operation`` (see that class for the fields)."""
    op = Operation(summary, ok, **rest)

    def mark(handler: Handler) -> Handler:
        setattr(handler, _OPERATION, op)
        return handler

    return mark


def operation_of(handler: Any) -> Operation | None:
    return getattr(handler, _OPERATION, None)


@dataclass(frozen=True)
class RouteInfo:
    """A served route as tests and the document see it."""

    method: str
    path: str  # OpenAPI form: {name} without aiohttp's regex part
    access: Role | None  # None: public
    operation: Operation


def routes(app: web.Application) -> list[RouteInfo]:
    """Every served route (HEAD excluded), in registration order; RuntimeError for a
    route that declares no operation."""
    found: list[RouteInfo] = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        raw = info.get("path") or info.get("formatter") or ""
        op = operation_of(route.handler)
        if op is None:
            raise RuntimeError(f"route {route.method} {raw} declares no @operation")
        path = _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", str(raw))
        found.append(RouteInfo(route.method, path, access_of(route.handler), op))
    return found


def _json(schema: Mapping[str, Any], content_type: str = "application/json") -> dict[str, Any]:
    return {"content": {content_type: {"schema": dict(schema)}}}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        **_json({"$ref": _REF.format(model="Problem")}, PROBLEM_CONTENT_TYPE),
    }


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _operation_spec(
    info: RouteInfo, default_problems: Mapping[int, str], schemes: Sequence[str]
) -> dict[str, Any]:
    op = info.operation
    spec: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(info)}
    if op.description:
        spec["description"] = op.description
    if op.tags:
        spec["tags"] = list(op.tags)
    if op.params:
        spec["parameters"] = [p.spec() for p in op.params]
    if op.body is not None:
        spec["requestBody"] = {"required": True, **_json(_ref(op.body), op.body_content_type)}
    status, model = op.ok
    ok: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if model is not None:
        ok.update(_json(_ref(model)))
    if op.headers:
        ok["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in op.headers.items()
        }
    responses: dict[str, Any] = {str(status): ok}
    problems: dict[int, str] = {500: "internal error (logged, nothing internal named)"}
    problems.update(default_problems)
    if info.access is not None:
        problems[401] = "missing, expired, or invalid credential"
        problems[403] = f"the principal lacks the {info.access.value} role, or the tenant"
        spec["security"] = [{name: []} for name in schemes]
    else:
        spec["security"] = []
    problems.update(op.problems)
    for code in sorted(problems):
        responses[str(code)] = _problem(problems[code])
    spec["responses"] = responses
    if info.access is not None:
        spec["x-streams-role"] = info.access.value
    return spec


def _operation_id(info: RouteInfo) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", info.path).strip("_")
    return f"{info.method.lower()}_{words}"


_DEFAULTS_KEY = web.AppKey("openapi_default_problems", dict[int, str])


def add_default_problem(app: web.Application, status: int, description: str) -> None:
    """A status every operation may answer (e.g. 429 from a rate-limit middleware)."""
    app.setdefault(_DEFAULTS_KEY, {})[status] = description


def document(
    app: web.Application, *, title: str = "streams API", version: str = "1"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s routes."""
    infos = routes(app)
    models: set[type[BaseModel]] = set()
    for info in infos:
        op = info.operation
        models.update(m for m in (op.body, op.ok[1], *op.models) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in ordered], ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA
    schemes = ["bearer", "apiKey"]
    defaults: dict[int, str] = app[_DEFAULTS_KEY].copy() if _DEFAULTS_KEY in app else {}
    paths: dict[str, dict[str, Any]] = {}
    for info in infos:
        paths.setdefault(info.path, {})[info.method.lower()] = _operation_spec(
            info, defaults, schemes
        )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }


def served_app() -> web.Application:
    """The application ``streams api`` serves, built (never started: no broker, no store)."""
    from pydantic import SecretStr

    from streams.api.app import create_app
    from streams.api.auth import Authenticator
    from streams.api.settings import ApiSettings
    from streams.store.settings import StoreSettings

    settings = ApiSettings(
        api_jwt_secret=SecretStr("x" * 32), api_jwt_issuer="i", api_jwt_audience="a"
    )
    return create_app(settings, StoreSettings(), Authenticator(None, None))


def served_document() -> dict[str, Any]:
    """The document of the application ``streams api`` serves."""
    return document(served_app())


def render(doc: Mapping[str, Any]) -> str:
    """The document as the checked-in file holds it (stable: sorted keys, newline)."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document (this API's own, see ``/openapi.json``)."""

    model_config = {"extra": "allow"}

    openapi: str


_DOCUMENT_KEY = web.AppKey("openapi_document", dict[str, Any])


@public
@operation(
    "This API's OpenAPI 3.1 document",
    ok=(200, OpenApiDocument),
    tags=("meta",),
    probe=Probe(ok=200),
)
async def get_openapi(request: web.Request) -> web.Response:
    app = request.app
    if _DOCUMENT_KEY not in app:
        app[_DOCUMENT_KEY] = document(app)
    return web.json_response(app[_DOCUMENT_KEY])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", get_openapi)
