"""``GET /v1/audit``: the audit log for viewers, tenant-scoped (``tenancy``).

Answers ``{"records": [...], "next": cursor | null}``, oldest first by event time; each
record carries its hash-chain fields (``seq``, ``prev_hash``, ``hash``) so a client can
check the chain of what it was shown. ``next`` is null on the last page.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from streams.api.access import principal_of, requires
from streams.api.audit_params import MAX_FILTER_CHARS, cursor, parse_audit_query
from streams.api.openapi import Param, Probe, operation
from streams.api.problems import Problem
from streams.api.roles import Role
from streams.api.state import API_SETTINGS, DATABASE
from streams.api.tenancy import tenant_scope
from streams.errors import HandlerError
from streams.jobs.audit_store import query_audit

log = logging.getLogger("streams.api")


class AuditRecordOut(BaseModel):
    """One stored audit row with its hash-chain fields."""

    id: int
    event_id: str
    event_type: str
    tenant_id: str | None
    subject_id: str
    actor_id: str
    occurred_at_ms: int
    recorded_at_ms: int
    seq: int
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    """A page of audit records, oldest first; ``next`` is null on the last page."""

    records: list[AuditRecordOut]
    next: str | None


_TIME = "ISO-8601 time or epoch milliseconds"
_FILTER = {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_CHARS}
_PARAMS = (
    Param("subject", "query", "only this subject id", _FILTER),
    Param("actor", "query", "only this actor id", _FILTER),
    Param("event_type", "query", "only this event type, e.g. audit.admin_action", _FILTER),
    Param("tenant", "query", "tenant (a platform admin must name one, or *)", _FILTER),
    Param("since", "query", f"occurred at or after ({_TIME})", {"type": "string", "minLength": 1}),
    Param("until", "query", f"occurred before ({_TIME})", {"type": "string", "minLength": 1}),
    Param(
        "after",
        "query",
        "the `next` value of the previous page",
        {"type": "string", "pattern": r"^[0-9]{1,16}\.[0-9]{1,19}$"},
    ),
    Param("limit", "query", "page size", {"type": "integer", "minimum": 1}),
)


@requires(Role.VIEWER)
@operation(
    "The audit log, tenant-scoped",
    ok=(200, AuditPage),
    tags=("audit",),
    params=_PARAMS,
    problems={400: "a bad query parameter (named in `parameter`)", 503: "store unavailable"},
    probe=Probe(ok=200),
)
async def get_audit(request: web.Request) -> web.Response:
    settings = request.app[API_SETTINGS]
    query = parse_audit_query(
        {k: request.query.getall(k) for k in request.query}, max_limit=settings.api_audit_max_limit
    )
    tenant = tenant_scope(principal_of(request), query.tenant)
    try:
        records = await query_audit(
            request.app[DATABASE],
            tenant_id=tenant,
            subject_id=query.subject,
            actor_id=query.actor,
            event_type=query.event_type,
            since_ms=query.since_ms,
            until_ms=query.until_ms,
            after=query.after,
            limit=query.limit + 1,
        )
    except HandlerError as exc:
        log.warning("audit query failed: %s", type(exc).__name__)
        raise Problem(503, "store-unavailable", "audit store unavailable") from None
    page = records[: query.limit]
    more = len(records) > query.limit
    return web.json_response(
        {
            "records": [r.as_dict() for r in page],
            "next": cursor(page[-1].occurred_at_ms, page[-1].id) if more else None,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/audit", get_audit)
