"""Per-route access declarations and the middleware that enforces them.

``@public`` (no credential) or ``@requires(Role.VIEWER)`` (or several roles, any of which
admits: ``@requires(Role.PRODUCER, Role.OPERATOR)``); ``check_declared`` refuses an
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


PROVIDER_SIGNED = "provider-signature"


def provider_signed(handler: Handler) -> Handler:
    """No bearer token or API key: the handler itself verifies the provider's signature on
    the raw body (incoming payment-provider webhooks, ``provider_routes``)."""
    setattr(handler, _ACCESS, PROVIDER_SIGNED)
    return handler


def requires(*roles: Role) -> Callable[[Handler], Handler]:
    """Admit a principal holding any of ``roles`` (implied roles count, see roles.py)."""
    if not roles:
        raise ValueError("requires() needs at least one role")
    admitted = frozenset(roles)

    def mark(handler: Handler) -> Handler:
        setattr(handler, _ACCESS, admitted)
        return handler

    return mark


def access_of(handler: object) -> frozenset[Role] | None:
    """The roles admitted to a handler; None for a public one (or one declaring nothing)."""
    value = getattr(handler, _ACCESS, None)
    return value if isinstance(value, frozenset) else None


def describe(roles: frozenset[Role]) -> str:
    """``the operator role`` / ``one of the operator, producer roles``."""
    names = sorted(r.value for r in roles)
    return f"the {names[0]} role" if len(names) == 1 else f"one of the {', '.join(names)} roles"


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
    if access in (_PUBLIC, PROVIDER_SIGNED) and match.http_exception is None:
        return await handler(request)
    try:
        principal = request.app[AUTHENTICATOR].authenticate(
            request.headers.get("Authorization"), request.headers.get("X-Api-Key")
        )
    except AuthFailure as failure:
        raise unauthorized(failure) from None
    request[PRINCIPAL] = principal
    if match.http_exception is None:
        if not isinstance(access, frozenset):
            raise Problem(403, "forbidden", "this route admits nobody")
        if not any(principal.has(role) for role in access):
            raise Problem(403, "forbidden", f"this route requires {describe(access)}")
    return await handler(request)
