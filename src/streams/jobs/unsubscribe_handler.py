"""The landing of the email's HMAC unsubscribe link (``mail_render.unsubscribe_url``).

``GET|POST <base>?u=<user>&t=<token>``: a valid token publishes ``email.unsubscribed``
for the user (the email family's suppression job records it, ``mail_suppression``) and
answers a short page; a missing or wrong token answers 403 and publishes nothing. POST
serves RFC 8058 one-click unsubscribe (``List-Unsubscribe-Post``). The event id derives
from the user, so clicking twice records one unsubscription.

A small aiohttp sub-application (``unsubscribe_app``) until the API server's route
mechanism exists (CONTRACTS.md: then it moves to ``api/unsubscribe_routes.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from streams.jobs.mail_render import verify_unsubscribe_token

Publish = Callable[..., Awaitable[Any]]
PAGE = "<!doctype html><title>Unsubscribed</title><p>You will no longer receive these emails.</p>"


def unsubscribe_event_id(user_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"streams:email:unsubscribe:{user_id}"))


def unsubscribe_app(
    secret: str | SecretStr, publish: Publish, path: str = "/unsubscribe"
) -> web.Application:
    """The handler at ``path``; ``publish`` is ``Publisher.publish_async``."""

    async def handle(request: web.Request) -> web.Response:
        user = request.query.get("u", "")
        token = request.query.get("t", "")
        if not user or not token or not verify_unsubscribe_token(secret, user, token):
            return web.Response(status=403, text="invalid or expired unsubscribe link")
        await publish("email.unsubscribed", {"user_id": user}, event_id=unsubscribe_event_id(user))
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get(path, handle)
    app.router.add_post(path, handle)
    return app
