"""``POST /v1/families/{family}:pause`` and ``:resume`` (operator): every worker stops
fetching the family's main and retry topics within about a second, and a paused family
stays paused across worker restarts until resumed (``pause/<family>`` in
``streams.control``, no expiry; resume tombstones it). Each is audited
(``audit.admin_action``) before it is answered. Workers report paused families in their
``/health/ready`` and ``/health/startup`` bodies (``paused_families``).
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from streams.api import control_plane
from streams.api.access import principal_of, requires
from streams.api.admin_audit import admin_action
from streams.api.control_plane import now_ms, plane
from streams.api.openapi import Param, Probe, operation
from streams.api.problems import Problem
from streams.api.roles import Role
from streams.control.model import PAUSE, Command

_FAMILY = Param("family", "path", "a family of topics.yaml", {"type": "string"})
_PROBLEMS = {404: "unknown family", 503: "the broker did not acknowledge (command or audit)"}


class FamilyPause(BaseModel):
    family: str
    paused: bool
    at_ms: int


def _family(request: web.Request) -> str:
    name = request.match_info["family"]
    if name not in plane(request).catalog.families:
        raise Problem(404, "family-not-found", f"family {name!r} is not in the catalog")
    return name


@requires(Role.OPERATOR)
@operation(
    "Pause a family on every worker",
    ok=(200, FamilyPause),
    tags=("families",),
    params=(_FAMILY,),
    problems=_PROBLEMS,
    probe=Probe(ok=404, path={"family": "no_such_family"}),
)
async def pause(request: web.Request) -> web.Response:
    at = now_ms()
    target = f"family/{request.match_info['family']}"
    async with admin_action(request, "family.pause", target=target):
        name = _family(request)
        command = Command(
            kind=PAUSE.name, target=name, issued_at_ms=at, actor=principal_of(request).id
        )
        await plane(request).issue(command)
    return web.json_response(FamilyPause(family=name, paused=True, at_ms=at).model_dump())


@requires(Role.OPERATOR)
@operation(
    "Resume a paused family",
    ok=(200, FamilyPause),
    tags=("families",),
    params=(_FAMILY,),
    problems=_PROBLEMS,
    probe=Probe(ok=404, path={"family": "no_such_family"}),
)
async def resume(request: web.Request) -> web.Response:
    target = f"family/{request.match_info['family']}"
    async with admin_action(request, "family.resume", target=target):
        name = _family(request)
        await plane(request).revoke(PAUSE.name, name)
    return web.json_response(FamilyPause(family=name, paused=False, at_ms=now_ms()).model_dump())


def add_routes(app: web.Application) -> None:
    control_plane.install(app)
    app.router.add_post("/v1/families/{family}:pause", pause)
    app.router.add_post("/v1/families/{family}:resume", resume)
