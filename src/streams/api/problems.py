"""RFC 9457 problem documents: every error the API answers is ``application/problem+json``.

Handlers raise ``Problem``; the ``problems`` middleware also turns aiohttp's own HTTP
errors (404, 405, 413 ...) and unexpected exceptions (a 500 that names nothing internal)
into problems.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

from streams.api.middleware_types import Handler

CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:streams:problem:"
log = logging.getLogger("streams.api")


class Problem(Exception):
    """An error answer: ``status``, a ``slug`` (the type is ``urn:streams:problem:<slug>``),
    a human ``detail``; ``extra`` members (e.g. ``parameter``) and response ``headers``."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "type": TYPE_PREFIX + self.slug,
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }

    def response(self) -> web.Response:
        return web.json_response(
            self.body(), status=self.status, content_type=CONTENT_TYPE, headers=self.headers
        )


def bad_parameter(name: str, detail: str) -> Problem:
    """400 naming the query parameter ``name``."""
    return Problem(400, "invalid-parameter", f"{name}: {detail}", extra={"parameter": name})


def _from_http_error(exc: web.HTTPException) -> Problem:
    slug = HTTPStatus(exc.status).phrase.lower().replace(" ", "-")
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return Problem(exc.status, slug, exc.reason, headers=headers)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_error(exc).response()
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return Problem(500, "internal-error", "internal error (logged)").response()
