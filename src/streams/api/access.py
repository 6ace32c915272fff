"""Per-route access declarations and the middleware that enforces them.

``@public`` (no credential) or ``@requires(Role.VIEWER)``; ``check_declared`` refuses an
application with a route that declares neither. A request to an unknown path still needs a
credential before it learns the path does not exist (401 before 404).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from streams.api.auth import Authenticator, AuthFailure
from streams.api.middleware_types import Handler
from streams.api.problems import Problem
from streams.api.roles import Principal, Role

AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
PRINCIPAL = web.RequestKey("principal", Principal)
_ACCESS = "__streams_access__"
_PUBLIC = "public"
REALM = "streams"


def public(handler: Handler) -> Handler:
    setattr(handler, _ACCESS, _PUBLIC)
    return handler


def requires(role: Role) -> Callable[[Handler], Handler]:
    def mark(handler: Handler) -> Handler:
        setattr(handler, _ACCESS, role)
        return handler

    return mark


def access_of(handler: object) -> Role | None:
    """The role a handler requires; None for a public one (or one that declares nothing)."""
    value = getattr(handler, _ACCESS, None)
    return value if isinstance(value, Role) else None


def check_declared(app: web.Application) -> None:
    """Raise RuntimeError naming any route that declares no access."""
    for route in app.router.routes():
        if route.method != "HEAD" and not hasattr(route.handler, _ACCESS):
            raise RuntimeError(f"route {route.method} {route.resource} declares no access")


def unauthorized(failure: AuthFailure) -> Problem:
    challenge = f'Bearer realm="{REALM}"'
    if not failure.missing:
        description = failure.reason.replace('"', "'")
        challenge += f', error="invalid_token", error_description="{description}"'
    return Problem(401, "unauthorized", failure.reason, headers={"WWW-Authenticate": challenge})


def principal_of(request: web.Request) -> Principal:
    try:
        return request[PRINCIPAL]
    except KeyError:
        raise RuntimeError("principal_of on a public route") from None


@web.middleware
async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    access = getattr(match.handler, _ACCESS, None)
    if access == _PUBLIC and match.http_exception is None:
        return await handler(request)
    try:
        principal = request.app[AUTHENTICATOR].authenticate(
            request.headers.get("Authorization"), request.headers.get("X-Api-Key")
        )
    except AuthFailure as failure:
        raise unauthorized(failure) from None
    request[PRINCIPAL] = principal
    if match.http_exception is None:
        if not isinstance(access, Role):
            raise Problem(403, "forbidden", "this route admits nobody")
        if not principal.has(access):
            raise Problem(403, "forbidden", f"this route requires the {access.value} role")
    return await handler(request)
