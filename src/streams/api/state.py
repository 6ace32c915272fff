"""What the application holds (aiohttp ``AppKey``s), shared by its route modules."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from streams.api.settings import ApiSettings
from streams.publish.publisher import Publisher
from streams.store.database import Database


@dataclass
class Lifecycle:
    """``started``: the store answered once (its schema is current); the startup probe."""

    started: bool = False


API_SETTINGS = web.AppKey("api_settings", ApiSettings)
DATABASE = web.AppKey("database", Database)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
PUBLISHER = web.AppKey("publisher", Publisher)
"""The SDK publisher every route publishes with (ingest, admin audit): created at startup."""


def publisher_of(request: web.Request) -> Publisher:
    """The app's publisher; Problem 503 when it has none (no cluster configured)."""
    from streams.api.problems import Problem

    if PUBLISHER not in request.app:
        raise Problem(
            503,
            "broker-unavailable",
            "no Kafka cluster is configured",
            extra={"reason": "no Kafka cluster is configured"},
        )
    return request.app[PUBLISHER]
