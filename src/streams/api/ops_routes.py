"""Operator routes: families, circuit breakers, rate limits, backlog clear, statistics.

Viewers read (``GET /v1/families``, ``/v1/families/{family}``, ``/v1/breakers``,
``/v1/ratelimits/{family}/{key}``, ``/v1/stats``); admins act (``POST
/v1/families/{family}:clear``, ``POST /v1/ratelimits/{family}/{key}:reset``), and every
action is published as ``audit.admin_action`` before it is answered (``ops_audit``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streams.api import ops_clear, ops_ratelimit
from streams.api.access import requires
from streams.api.ops_audit import audited
from streams.api.ops_families import read_family, with_workers
from streams.api.ops_state import ops_of
from streams.api.problems import Problem, bad_parameter
from streams.api.roles import Role
from streams.core.stats import WINDOWS_MS

FAMILY = "{family:[a-z][a-z0-9_]*}"
KEY = "{key:[^/:]+}"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


@requires(Role.VIEWER)
async def list_families(request: web.Request) -> web.Response:
    ops = ops_of(request)
    prefix = ops.settings.topic_prefix
    now_ms = ops.clock_ms()
    families = list(ops.catalog.families.values())

    def read(offsets: Any) -> list[dict[str, Any]]:
        return [read_family(offsets, f, prefix, now_ms) for f in families]

    views = await ops.cluster(read)
    beats = ops.workers.live(now_ms)
    return _json(
        {
            "families": [
                with_workers(v, beats, f, prefix) for v, f in zip(views, families, strict=True)
            ],
            "workers": [b.worker_id for b in beats],
        }
    )


@requires(Role.VIEWER)
async def get_family(request: web.Request) -> web.Response:
    ops = ops_of(request)
    family = ops.family(request.match_info["family"])
    prefix = ops.settings.topic_prefix
    now_ms = ops.clock_ms()
    view = await ops.cluster(lambda offsets: read_family(offsets, family, prefix, now_ms))
    return _json(with_workers(view, ops.workers.live(now_ms), family, prefix))


@requires(Role.VIEWER)
async def list_breakers(request: web.Request) -> web.Response:
    ops = ops_of(request)
    beats = ops.workers.live(ops.clock_ms())
    by_dependency: dict[str, dict[str, str]] = {}
    for beat in beats:
        for dependency, state in beat.breakers.items():
            by_dependency.setdefault(dependency, {})[beat.worker_id] = state
    return _json(
        {
            "breakers": [
                {"dependency": d, "workers": dict(sorted(w.items()))}
                for d, w in sorted(by_dependency.items())
            ],
            "workers": [{"worker_id": b.worker_id, "at_ms": b.at_ms} for b in beats],
        }
    )


@requires(Role.VIEWER)
async def get_stats(request: web.Request) -> web.Response:
    ops = ops_of(request)
    window = request.query.get("window", "1h")
    if window not in WINDOWS_MS:
        raise bad_parameter("window", f"one of {', '.join(WINDOWS_MS)}, got {window!r}")
    now_ms = ops.clock_ms()
    with ops.stats_lock:
        rows = ops.stats.summary(now_ms, WINDOWS_MS[window])
    return _json({"window": window, "until_ms": now_ms, "by_type": rows})


@requires(Role.VIEWER)
async def get_ratelimit(request: web.Request) -> web.Response:
    ops = ops_of(request)
    family = ops.family(request.match_info["family"])
    key = request.match_info["key"]
    if not family.rate_limits:
        raise Problem(404, "no-rate-limits", f"family {family.name} has no rate limits")
    now_ms = ops.clock_ms()
    body = await ops.cluster(
        lambda offsets: ops_ratelimit.status(offsets, ops.settings, family, key, now_ms)
    )
    return _json(body)


@requires(Role.ADMIN)
async def reset_ratelimit(request: web.Request) -> web.Response:
    ops = ops_of(request)
    family = ops.family(request.match_info["family"])
    key = request.match_info["key"]
    if not family.rate_limits:
        raise Problem(404, "no-rate-limits", f"family {family.name} has no rate limits")
    async with audited(request, "ratelimit.reset", f"ratelimit/{family.name}/{key}") as audit:
        body = await ops_ratelimit.reset(ops, family, key, principal=audit.actor)
    return _json(body, status=202)


@requires(Role.ADMIN)
async def clear_family(request: web.Request) -> web.Response:
    ops = ops_of(request)
    family = ops.family(request.match_info["family"])
    async with audited(request, "family.clear", f"family/{family.name}") as audit:
        now_ms = ops.clock_ms()
        record = await ops.cluster(
            lambda offsets: ops_clear.clear(
                offsets,
                ops.settings,
                family,
                actor=audit.actor,
                now_ms=now_ms,
                produce=ops.produce_sync,
            )
        )
        audit.details["clear_id"] = record.clear_id
        audit.details["skipped"] = str(record.skipped)
    return _json(record.as_dict())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/families", list_families)
    app.router.add_get(f"/v1/families/{FAMILY}", get_family)
    app.router.add_post(f"/v1/families/{FAMILY}:clear", clear_family)
    app.router.add_get("/v1/breakers", list_breakers)
    app.router.add_get("/v1/stats", get_stats)
    app.router.add_get(f"/v1/ratelimits/{FAMILY}/{KEY}", get_ratelimit)
    app.router.add_post(f"/v1/ratelimits/{FAMILY}/{KEY}:reset", reset_ratelimit)
