"""Every operator/admin action is published as an ``audit.admin_action`` event before it
is answered (issue 13), so the audit family's topic holds who did what to what, and how
it ended.

A route wraps the action::

    async with admin_action(request, "pause", target=f"family/{name}") as audit:
        ...                                    # do it; raise Problem to refuse
        audit.details["partitions"] = "6"      # optional extra detail (str -> str)

On leaving the block the event is published through the API's SDK ``Publisher``
(acks=all) and only then does the handler answer: ``outcome`` is ``ok``, ``refused:<status>``
for a Problem raised inside (re-raised after publishing), or ``error:<ExceptionClass>``.
If the broker does not acknowledge the audit event the answer is 503 ``audit-unavailable``
(the action may have taken effect: the detail says so), never a 2xx without its record.
CLI-side actions publish the same event with ``publish_admin_action`` and their own
Publisher. The event: ``subject_id`` = target, ``actor_id`` = principal id, ``action``,
``details`` = {outcome, via (jwt/api_key), roles, ...}, envelope ``tenant_id`` = the
principal's tenant (or the ``tenant`` given for a platform principal's action).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from streams.api.access import principal_of
from streams.api.problems import Problem
from streams.api.roles import Principal
from streams.api.state import API_SETTINGS, publisher_of
from streams.errors import PublishError
from streams.publish.outgoing import PublishResult
from streams.publish.publisher import Publisher

log = logging.getLogger("streams.api")
EVENT_TYPE = "audit.admin_action"
AUDIT_TIMEOUT_S = 10.0
ACK_GRACE_S = 1.0  # past the producer's message timeout, for librdkafka's own verdict


@dataclass
class AdminAction:
    """What is being done; ``details`` may be filled in by the action."""

    principal: Principal
    action: str
    target: str
    tenant: str | None
    details: dict[str, str] = field(default_factory=dict)


def admin_action_payload(action: AdminAction, outcome: str) -> dict[str, object]:
    """The ``audit.admin_action`` payload for ``action`` ending with ``outcome`` (pure)."""
    details = {
        **action.details,
        "outcome": outcome,
        "via": action.principal.via,
        "roles": ",".join(sorted(r.value for r in action.principal.roles)),
    }
    return {
        "subject_id": action.target,
        "actor_id": action.principal.id,
        "action": action.action,
        "details": details,
    }


async def publish_admin_action(
    publisher: Publisher, action: AdminAction, outcome: str, *, timeout_s: float = AUDIT_TIMEOUT_S
) -> PublishResult:
    """Publish the event and wait for the broker's ack; raises PublishError otherwise."""
    return await publisher.publish_async(
        EVENT_TYPE,
        admin_action_payload(action, outcome),
        tenant_id=action.tenant,
        timeout_s=timeout_s,
    )


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, Problem):
        return f"refused:{exc.status}"
    if isinstance(exc, web.HTTPException):
        return f"refused:{exc.status}"
    return f"error:{type(exc).__name__}"


@asynccontextmanager
async def admin_action(
    request: web.Request,
    action: str,
    *,
    target: str,
    tenant: str | None = None,
    details: Mapping[str, str] | None = None,
) -> AsyncIterator[AdminAction]:
    """Run the block as an audited action (module docstring). ``tenant`` defaults to the
    principal's own."""
    principal = principal_of(request)
    record = AdminAction(principal, action, target, tenant or principal.tenant, dict(details or {}))
    failure: BaseException | None = None
    try:
        yield record
    except BaseException as exc:
        failure = exc
        raise
    finally:
        await _publish_or_503(request, record, _outcome(failure), failed=failure is not None)


async def _publish_or_503(
    request: web.Request, record: AdminAction, outcome: str, *, failed: bool
) -> None:
    try:
        timeout_s = request.app[API_SETTINGS].api_publish_timeout_s + ACK_GRACE_S
        await publish_admin_action(publisher_of(request), record, outcome, timeout_s=timeout_s)
    except (PublishError, Problem) as exc:  # Problem: no publisher configured
        log.warning("audit of %s %s not acknowledged: %s", record.action, record.target, exc)
        if failed:  # the action's own error stays the answer; the audit gap is logged
            return
        raise Problem(
            503,
            "audit-unavailable",
            f"{record.action} {record.target}: done, but its audit event was not "
            f"acknowledged by the broker ({type(exc).__name__}); retry the action",
        ) from None
