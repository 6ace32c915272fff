"""``GET /v1/events/{event_id}`` (its status) and ``DELETE /v1/events/{event_id}`` (cancel).

The status is the latest record the workers wrote to ``streams.status`` for that id
(``control``), materialised here; it is visible within about a second of the change (the
worker's coalescing window plus this follower's fetch) and kept for the status TTL
(``control_plane.status_ttl``).

What a status query can know: every transition a worker recorded for an event in the last
TTL — running, retrying (attempt, due time, last error class), deferred (why, until),
done (when, attempts), dead-lettered (reason, DLQ position), cancelled. What it cannot:
an event published (SDK or HTTP) that no worker has reached yet has no record, and neither
has an id never published, nor one older than the TTL: all three answer 404 (the body
says so), indistinguishably. A state shorter than the worker's coalescing window (e.g.
``running`` of a fast handler) may never be shown.

Owner only: a principal sees and cancels events of its own tenant (another tenant's event
is a 404, never a 403: ids do not leak); a platform admin (no tenant claim) sees all.
Cancel writes ``cancel/<event_id>`` to ``streams.control`` (expiring after
``control_plane.cancel_ttl``) carrying the caller's tenant, so it only ever applies to that
tenant's event: a pending or retrying event is then never run (acked as ``cancelled``), a
running handler is asked to stop. An operator's cancel is audited (``audit.admin_action``
``event.cancel``). 202 means the cancel is durable, not that it took effect
(poll the status); 409 answers a cancel of a finished event, with its final state.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from streams.api import control_plane
from streams.api.access import principal_of, requires
from streams.api.admin_audit import admin_action
from streams.api.control_plane import now_ms, plane
from streams.api.openapi import Param, Probe, operation
from streams.api.problems import Problem
from streams.api.roles import Principal, Role
from streams.control.model import CANCEL, Command, DlqPosition, StatusRecord

_ID = Param("event_id", "path", "the event id", {"type": "string", "maxLength": 128})
_NOT_FOUND = (
    "no status for this event in this tenant: an unknown id, an event no worker has "
    "reached yet, or one older than the status TTL"
)


class EventStatus(BaseModel):
    event_id: str
    family: str
    event_type: str
    state: str
    attempt: int
    at_ms: int
    due_at_ms: int | None = None
    error_class: str | None = None
    reason: str | None = None
    dlq: DlqPosition | None = None
    cancel_requested: bool = False


class CancelAccepted(BaseModel):
    event_id: str
    state: str  # "cancel_requested"
    expires_at_ms: int
    last_known_state: str | None = None


def _visible(principal: Principal, record: StatusRecord | None) -> StatusRecord | None:
    if record is None:
        return None
    if principal.tenant is None:
        return record if principal.has(Role.OPERATOR) else None
    return record if record.tenant_id == principal.tenant else None


def _body(record: StatusRecord, cancel: Command | None) -> dict[str, Any]:
    out = EventStatus(
        **record.model_dump(include=set(EventStatus.model_fields)),
        cancel_requested=cancel is not None and not record.final,
    )
    return out.model_dump(mode="json", exclude_none=True)


@requires(Role.PRODUCER, Role.OPERATOR)
@operation(
    "An event's status",
    ok=(200, EventStatus),
    tags=("events",),
    params=(_ID,),
    description=__doc__ or "",
    problems={404: _NOT_FOUND, 503: "the status topic is still being read"},
    probe=Probe(ok=404, path={"event_id": "no-such-event"}),
)
async def get_status(request: web.Request) -> web.Response:
    event_id = request.match_info["event_id"]
    cp = plane(request)
    record = _visible(principal_of(request), cp.status.get(event_id))
    if record is None:
        raise Problem(404, "event-not-found", _NOT_FOUND)
    return web.json_response(_body(record, cp.control.cancelled(event_id)))


@requires(Role.PRODUCER, Role.OPERATOR)
@operation(
    "Cancel an event that has not finished",
    ok=(202, CancelAccepted),
    tags=("events",),
    params=(_ID,),
    problems={
        400: "not a valid event id",
        404: "another tenant's event",
        409: "the event already finished (the body has its final state)",
        503: "the broker did not acknowledge the cancel",
    },
    probe=Probe(ok=202, path={"event_id": "probe-event-1"}),
)
async def cancel(request: web.Request) -> web.Response:
    """An operator's (or admin's) cancel is an audited action; a producer's own is not."""
    if not principal_of(request).has(Role.OPERATOR):
        return await _cancel(request)
    async with admin_action(request, "event.cancel", target=request.match_info["event_id"]):
        return await _cancel(request)


async def _cancel(request: web.Request) -> web.Response:
    event_id = request.match_info["event_id"]
    principal = principal_of(request)
    cp = plane(request)
    known = cp.status.get(event_id)
    record = _visible(principal, known)
    if known is not None and record is None:
        raise Problem(404, "event-not-found", _NOT_FOUND)
    if record is not None and record.final:
        raise Problem(
            409,
            "event-finished",
            f"event {event_id} already finished: {record.state}",
            extra={"final": _body(record, None)},
        )
    issued = now_ms()
    try:
        command = Command(
            kind=CANCEL.name,
            target=event_id,
            issued_at_ms=issued,
            expires_at_ms=issued + cp.cancel_ttl_ms,
            actor=principal.id,
            args={"tenant": principal.tenant} if principal.tenant is not None else {},
        )
    except ValueError as exc:
        raise Problem(400, "bad-event-id", f"event_id: {exc}") from None
    await cp.issue(command)
    for stale in cp.control.expired(CANCEL.name, limit=20):  # the topic is compacted only
        await cp.revoke(CANCEL.name, stale)
    answer = CancelAccepted(
        event_id=event_id,
        state="cancel_requested",
        expires_at_ms=command.expires_at_ms or 0,
        last_known_state=record.state if record is not None else None,
    )
    return web.json_response(answer.model_dump(mode="json"), status=202)


def add_routes(app: web.Application) -> None:
    control_plane.install(app)
    app.router.add_get("/v1/events/{event_id}", get_status)
    app.router.add_delete("/v1/events/{event_id}", cancel)
