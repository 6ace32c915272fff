"""``/health/live`` (the process answers), ``/health/startup`` (the store's schema was
brought current once), ``/health/ready`` (started, and now the store answers a query and
the broker a metadata request, each within ``READY_TIMEOUT_S``). All public; none names a
host, URL or error text."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import text

from streams.api.access import public
from streams.api.openapi import Probe, operation
from streams.api.state import DATABASE, LIFECYCLE, PUBLISHER
from streams.errors import HandlerError

READY_TIMEOUT_S = 2.0


class HealthStatus(BaseModel):
    """``ok`` or ``unavailable``, with the named checks behind it."""

    status: str
    checks: dict[str, bool] = {}


_OK = (200, HealthStatus)
_PROBE_ARGS: dict[str, Any] = {"tags": ("health",), "probe": Probe(ok=200)}
_NOT_YET = {503: "not (yet) healthy; `checks` names the failed check"}


def _status(ok: bool, checks: dict[str, bool]) -> web.Response:
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    return web.json_response(body, status=200 if ok else 503)


@public
@operation("Liveness: the process answers", ok=_OK, **_PROBE_ARGS)
async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@public
@operation("Startup: the store schema is current", ok=_OK, problems=_NOT_YET, **_PROBE_ARGS)
async def startup(request: web.Request) -> web.Response:
    started = request.app[LIFECYCLE].started
    return _status(started, {"store_migrated": started})


async def _store_answers(request: web.Request) -> bool:
    try:
        async with request.app[DATABASE].transaction(
            write=False, timeout_s=READY_TIMEOUT_S
        ) as conn:
            await conn.execute(text("SELECT 1"))
    except HandlerError:
        return False
    return True


@public
@operation("Readiness: started, the store answers", ok=_OK, problems=_NOT_YET, **_PROBE_ARGS)
async def ready(request: web.Request) -> web.Response:
    started = request.app[LIFECYCLE].started
    reachable = started and await _store_answers(request)
    checks = {"started": started, "store_reachable": reachable}
    if PUBLISHER in request.app:  # `streams api` always has one (it needs a cluster)
        publisher = request.app[PUBLISHER]
        checks["broker_reachable"] = await asyncio.to_thread(publisher.reachable, READY_TIMEOUT_S)
    return _status(all(checks.values()), checks)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/startup", startup)
    app.router.add_get("/health/ready", ready)
