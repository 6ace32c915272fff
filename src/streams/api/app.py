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

from streams.api import audit_routes, health, ops_routes, ops_state
from streams.api.access import AUTHENTICATOR, authorize, check_declared
from streams.api.auth import Authenticator
from streams.api.problems import problems
from streams.api.settings import ApiSettings
from streams.api.state import API_SETTINGS, DATABASE, LIFECYCLE, Lifecycle
from streams.catalog import Catalog
from streams.errors import HandlerError
from streams.settings import Settings
from streams.store.database import Database
from streams.store.settings import StoreSettings

log = logging.getLogger("streams.api")
MIGRATE_RETRY_FIRST_S = 0.5
MIGRATE_RETRY_MAX_S = 30.0
MAX_REQUEST_BYTES = 1024 * 1024


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
) -> web.Application:
    """The API application over the store ``store`` describes (ConfigError for a bad URL);
    the operator routes need ``kafka`` and ``catalog`` (without them they answer 503)."""
    app = web.Application(middlewares=[problems, authorize], client_max_size=MAX_REQUEST_BYTES)
    app[API_SETTINGS] = settings
    app[AUTHENTICATOR] = authenticator
    app[DATABASE] = Database.from_settings(store)
    app[LIFECYCLE] = Lifecycle()
    health.add_routes(app)
    audit_routes.add_routes(app)
    ops_state.install(app, kafka, catalog)
    ops_routes.add_routes(app)
    check_declared(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_migrate_until_done(app[DATABASE], app[LIFECYCLE]))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await app[DATABASE].dispose()

    app.cleanup_ctx.append(lifecycle)
    return app
