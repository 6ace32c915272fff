"""Operator routes: families, circuit breakers, rate limits, backlog clear, statistics.

Viewers read (``GET /v1/families``, ``/v1/families/{family}``, ``/v1/breakers``,
``/v1/ratelimits/{family}/{key}``, ``/v1/stats``); admins act (``POST
/v1/families/{family}:clear``, ``POST /v1/ratelimits/{family}/{key}:reset``), and every
action is published as ``audit.admin_action`` before it is answered (``admin_audit``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streams.api import ops_models as m
from streams.api import ops_ratelimit
from streams.api.access import principal_of, requires
from streams.api.admin_audit import admin_action
from streams.api.openapi import Param, Probe, operation
from streams.api.ops_families import read_family, with_workers
from streams.api.ops_state import ops_of
from streams.api.problems import Problem, bad_parameter
from streams.api.roles import Role
from streams.api.tenancy import tenant_scope
from streams.broker.clear import GroupActive, clear_backlog
from streams.core.stats import ALL_TENANTS, WINDOWS_MS

FAMILY = "{family:[a-z][a-z0-9_]*}"
KEY = "{key:[^/:]+}"
TAGS = ("operations",)
P_FAMILY = Param(
    "family", "path", "a family of the catalog", {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
)
P_KEY = Param(
    "key",
    "path",
    "the partition key (user, subscription) or, for a provider limit, the provider",
    {"type": "string", "pattern": "^[^/:]+$"},
)
UNAVAILABLE = {503: "the cluster (or the audit event) did not answer"}
NO_FAMILY = Probe(ok=404, path={"family": "nosuchfamily", "key": "k"})


def _platform(request: web.Request, what: str) -> None:
    """Shared families serve every tenant: only a principal bound to no tenant acts on them."""
    if principal_of(request).tenant is not None:
        raise Problem(403, "platform-only", f"{what} affects every tenant: a platform admin only")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


@requires(Role.VIEWER)
@operation(
    "Families: lag, oldest unprocessed age, in flight, DLQ depth",
    ok=(200, m.FamilyList),
    tags=TAGS,
    problems=UNAVAILABLE,
    probe=Probe(ok=200),
)
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
@operation(
    "One family",
    ok=(200, m.FamilyView),
    tags=TAGS,
    params=(P_FAMILY,),
    problems={404: "no such family", **UNAVAILABLE},
    probe=NO_FAMILY,
)
async def get_family(request: web.Request) -> web.Response:
    ops = ops_of(request)
    family = ops.family(request.match_info["family"])
    prefix = ops.settings.topic_prefix
    now_ms = ops.clock_ms()
    view = await ops.cluster(lambda offsets: read_family(offsets, family, prefix, now_ms))
    return _json(with_workers(view, ops.workers.live(now_ms), family, prefix))


@requires(Role.VIEWER)
@operation(
    "Circuit breakers per dependency per worker",
    ok=(200, m.BreakerList),
    tags=TAGS,
    probe=Probe(ok=200),
)
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
@operation(
    "Statistics of the last hour or day by family and event type",
    ok=(200, m.Stats),
    tags=TAGS,
    params=(
        Param("window", "query", "1h or 1d (default 1h)", {"type": "string", "enum": ["1h", "1d"]}),
        Param("tenant", "query", "a tenant (platform principals; * = every tenant)"),
    ),
    problems={400: "bad window or tenant"},
    probe=Probe(ok=200),
)
async def get_stats(request: web.Request) -> web.Response:
    ops = ops_of(request)
    window = request.query.get("window", "1h")
    if window not in WINDOWS_MS:
        raise bad_parameter("window", f"one of {', '.join(WINDOWS_MS)}, got {window!r}")
    scope = tenant_scope(principal_of(request), request.query.get("tenant"))
    tenant = scope if isinstance(scope, str) else ALL_TENANTS
    now_ms = ops.clock_ms()
    with ops.stats_lock:
        rows = ops.stats.summary(now_ms, WINDOWS_MS[window], tenant=tenant)
    return _json({"window": window, "until_ms": now_ms, "tenant": tenant, "by_type": rows})


@requires(Role.VIEWER)
@operation(
    "Rate-limit buckets of a key",
    ok=(200, m.RateLimitStatus),
    tags=TAGS,
    params=(P_FAMILY, P_KEY),
    problems={404: "no such family, or it has no rate limits", **UNAVAILABLE},
    probe=NO_FAMILY,
)
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
@operation(
    "Reset a key's rate-limit buckets (applied by the owning worker)",
    ok=(202, m.RateLimitReset),
    tags=TAGS,
    params=(P_FAMILY, P_KEY),
    problems={404: "no such family, or it has no rate limits", **UNAVAILABLE},
    probe=NO_FAMILY,
)
async def reset_ratelimit(request: web.Request) -> web.Response:
    ops = ops_of(request)
    family = ops.family(request.match_info["family"])
    key = request.match_info["key"]
    if not family.rate_limits:
        raise Problem(404, "no-rate-limits", f"family {family.name} has no rate limits")
    _platform(request, "a rate-limit reset")
    async with admin_action(
        request, "ratelimit.reset", target=f"ratelimit/{family.name}/{key}"
    ) as audit:
        body = await ops_ratelimit.reset(ops, family, key, actor=audit.principal.id)
        audit.details["command"] = body["command"]
    return _json(body, status=202)


@requires(Role.ADMIN)
@operation(
    "Skip a family's backlog, recording the skipped offset ranges",
    ok=(200, m.ClearResult),
    tags=TAGS,
    params=(P_FAMILY,),
    problems={
        404: "no such family",
        409: "workers are running (the group is not empty)",
        **UNAVAILABLE,
    },
    probe=NO_FAMILY,
)
async def clear_family(request: web.Request) -> web.Response:
    ops = ops_of(request)
    family = ops.family(request.match_info["family"])
    _platform(request, "a backlog clear")
    async with admin_action(request, "family.clear", target=f"family/{family.name}") as audit:
        now_ms = ops.clock_ms()
        try:
            record = await ops.cluster(
                lambda offsets: clear_backlog(
                    offsets,
                    ops.settings,
                    family,
                    actor=audit.principal.id,
                    now_ms=now_ms,
                    produce=ops.produce_sync,
                )
            )
        except GroupActive as exc:
            raise Problem(409, "group-active", str(exc)) from None
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
