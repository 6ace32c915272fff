"""The application factory and its lifecycle.

``create_app`` builds everything that can fail on configuration before anything listens
(raising ConfigError). Once serving, a background task brings the store's schema current
(retrying with backoff while the database is unreachable): ``/health/startup`` turns 200
when it has, and the audit route answers 503 problems until the store answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from streams.api import (
    audit_routes,
    dlq_routes,
    health,
    ingest_routes,
    observe,
    openapi,
    ops_routes,
    ops_state,
    pause_routes,
    provider_routes,
    status_routes,
    unsubscribe_routes,
)
from streams.api.access import AUTHENTICATOR, authorize, check_declared
from streams.api.auth import Authenticator
from streams.api.observe import API_METRICS, ApiMetrics
from streams.api.problems import problems
from streams.api.settings import ApiSettings
from streams.api.state import API_SETTINGS, DATABASE, LIFECYCLE, PUBLISHER, Lifecycle
from streams.catalog import Catalog, load_catalog
from streams.errors import ConfigError, HandlerError, PublishError
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.store.database import Database
from streams.store.settings import StoreSettings

log = logging.getLogger("streams.api")
MIGRATE_RETRY_FIRST_S = 0.5
MIGRATE_RETRY_MAX_S = 30.0
PUBLISHER_CLOSE_TIMEOUT_S = 5.0


async def _migrate_until_done(db: Database, lifecycle: Lifecycle) -> None:
    delay_s = MIGRATE_RETRY_FIRST_S
    while True:
        try:
            await db.migrate()
        except (HandlerError, OSError) as exc:
            log.warning("store not ready (%s); retrying in %.1fs", type(exc).__name__, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, MIGRATE_RETRY_MAX_S)
        else:
            lifecycle.started = True
            log.info("store ready: %s", db.describe())
            return


def create_app(
    settings: ApiSettings,
    store: StoreSettings,
    authenticator: Authenticator,
    *,
    kafka: Settings | None = None,
    catalog: Catalog | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The API application over the store ``store`` describes (ConfigError for a bad URL)
    and the broker ``kafka`` names (default ``Settings()``; its publisher is made at
    startup, so building the app, e.g. for its OpenAPI document, needs no broker); the
    operator routes also read ``catalog`` (default: the settings' catalog file)."""
    app = web.Application(
        middlewares=[observe.observe, problems, authorize],
        client_max_size=settings.api_max_body_bytes,
    )
    app[API_METRICS] = ApiMetrics.create(registry if registry is not None else CollectorRegistry())
    app[API_SETTINGS] = settings
    app[AUTHENTICATOR] = authenticator
    app[DATABASE] = Database.from_settings(store)
    app[LIFECYCLE] = Lifecycle()
    health.add_routes(app)
    observe.add_routes(app)
    openapi.add_routes(app)
    audit_routes.add_routes(app)
    ingest_routes.add_routes(app)
    provider_routes.add_routes(app)
    dlq_routes.add_routes(app)
    unsubscribe_routes.add_routes(app)
    status_routes.add_routes(app)
    pause_routes.add_routes(app)
    ops_routes.add_routes(app)
    check_declared(app)
    openapi.routes(app)  # RuntimeError now for a route without @operation
    kafka_settings = (kafka or Settings()).model_copy(
        update={"publish_timeout_s": settings.api_publish_timeout_s}
    )
    ops_state.install(app, kafka_settings, catalog or load_catalog(kafka_settings.catalog_path))

    async def publisher(app: web.Application) -> AsyncIterator[None]:
        try:
            kafka_settings.bootstrap  # noqa: B018 - ConfigError when no cluster is named
        except ConfigError as exc:  # `streams api` refuses this; an embedding app may not
            log.warning("no publisher: %s (ingest and admin actions answer 503)", exc)
            yield
            return
        app[PUBLISHER] = Publisher(kafka_settings, producer_name="streams-api")
        try:
            yield
        finally:
            try:
                await asyncio.to_thread(app[PUBLISHER].close, PUBLISHER_CLOSE_TIMEOUT_S)
            except PublishError as exc:
                log.warning("publisher close: %s", exc)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_migrate_until_done(app[DATABASE], app[LIFECYCLE]))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await app[DATABASE].dispose()

    app.cleanup_ctx.append(publisher)
    app.cleanup_ctx.append(lifecycle)
    return app
