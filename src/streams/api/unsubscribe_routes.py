"""``/v1/unsubscribe``: where the email's HMAC unsubscribe link lands (issue 12).

``GET`` (the link) and ``POST`` (RFC 8058 one-click, ``List-Unsubscribe-Post``) with
``?u=<user>&t=<token>``: a valid token publishes ``email.unsubscribed`` for the user (the
email family's suppression job records it: no more ``notification`` emails) and answers
200; a wrong token answers 403 and publishes nothing. Public: the token is the credential.
The event id derives from the user, so clicking twice records one unsubscription. The
secret is ``STREAMS_UNSUBSCRIBE_SECRET`` (the email job's), read when the app is built;
without it no link is valid (403).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.api.access import public
from streams.api.openapi import Param, Probe, operation
from streams.api.problems import Problem
from streams.api.state import publisher_of
from streams.errors import PublishError
from streams.jobs.mail_render import verify_unsubscribe_token
from streams.jobs.mail_suppression import unsubscribe_event_id

PATH = "/v1/unsubscribe"
SECRET: web.AppKey[SecretStr | None] = web.AppKey("unsubscribe_secret", SecretStr)


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMS_", extra="ignore")
    unsubscribe_secret: SecretStr | None = None


class Unsubscribed(BaseModel):
    user_id: str
    unsubscribed: bool


_PARAMS = (
    Param(
        "u",
        "query",
        "the user id of the link",
        {"type": "string", "minLength": 1, "maxLength": 256},
        required=True,
    ),
    Param(
        "t",
        "query",
        "the link's HMAC token (64 hex characters)",
        {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        required=True,
    ),
)
_PROBLEMS = {
    400: "u or t missing or malformed",
    403: "the token does not match the user (or no unsubscribe secret is configured)",
    503: "the broker did not acknowledge the unsubscription",
}
_PROBE = Probe(ok=403, query={"u": "probe-user", "t": "0" * 64})


async def _unsubscribe(request: web.Request) -> web.Response:
    secret = request.app[SECRET]
    user, token = request.query.get("u", ""), request.query.get("t", "")
    if not 1 <= len(user) <= 256 or len(token) != 64:
        raise Problem(400, "invalid-parameter", "u (1-256 characters) and t (64 hex) required")
    if secret is None:  # no link can be valid: same answer as a wrong token
        raise Problem(403, "invalid-token", "unsubscribe links are not enabled on this server")
    if not verify_unsubscribe_token(secret, user, token):
        raise Problem(403, "invalid-token", "the unsubscribe link is not valid for this user")
    publisher = publisher_of(request)
    try:
        await asyncio.to_thread(
            publisher.publish,
            "email.unsubscribed",
            {"user_id": user},
            event_id=unsubscribe_event_id(user),
        )
    except PublishError as exc:
        raise Problem(503, "broker-unavailable", f"not recorded: {type(exc).__name__}") from None
    return web.json_response(Unsubscribed(user_id=user, unsubscribed=True).model_dump())


@public
@operation(
    "Unsubscribe from notification emails (the email link)",
    ok=(200, Unsubscribed),
    tags=("email",),
    params=_PARAMS,
    problems=_PROBLEMS,
    probe=_PROBE,
)
async def unsubscribe_get(request: web.Request) -> web.Response:
    return await _unsubscribe(request)


@public
@operation(
    "One-click unsubscribe (RFC 8058)",
    ok=(200, Unsubscribed),
    tags=("email",),
    params=_PARAMS,
    problems=_PROBLEMS,
    probe=_PROBE,
)
async def unsubscribe_post(request: web.Request) -> web.Response:
    return await _unsubscribe(request)


def add_routes(app: web.Application) -> None:
    app[SECRET] = _Settings().unsubscribe_secret
    app.router.add_get(PATH, unsubscribe_get)
    app.router.add_post(PATH, unsubscribe_post)
