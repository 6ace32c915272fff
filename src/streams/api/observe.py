"""The API's own metrics (``/metrics``, public, Prometheus text format).

``streams_api_requests_total{route,method,status}`` and
``streams_api_request_duration_seconds{route,method}``; ``route`` is the route's template
(``/v1/events/{event_id}``), never the raw path (bounded label values), ``unmatched`` for
a path no route serves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from streams.api.access import public
from streams.api.middleware_types import Handler
from streams.api.openapi import Probe, operation

_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class ApiMetrics:
    registry: CollectorRegistry
    requests: Counter
    duration_s: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ApiMetrics:
        return cls(
            registry,
            Counter(
                "streams_api_requests_total",
                "HTTP requests answered, by route template, method and status",
                ["route", "method", "status"],
                registry=registry,
            ),
            Histogram(
                "streams_api_request_duration_seconds",
                "Time to answer an HTTP request",
                ["route", "method"],
                buckets=_BUCKETS_S,
                registry=registry,
            ),
        )


API_METRICS = web.AppKey("api_metrics", ApiMetrics)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: counts every answer, problems included."""
    metrics = request.app[API_METRICS]
    started_s = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_label(request)
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.duration_s.labels(route, request.method).observe(time.perf_counter() - started_s)


@public
@operation(
    "Prometheus metrics of this API process",
    ok=(200, None),
    tags=("meta",),
    description="Text exposition format (text/plain; version=0.0.4).",
    probe=Probe(ok=200),
)
async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[API_METRICS].registry)
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", get_metrics)
