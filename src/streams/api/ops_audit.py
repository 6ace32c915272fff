"""Every operator/admin action of the ops routes is published as ``audit.admin_action``
(who, what, target, outcome) and acknowledged by the broker before the route answers.

The event: subject_id = target (``family/email``), actor_id = the principal's id, action
(``family.clear``), details = {outcome: ok | refused:<status> | error:<Class>, ...}. Not
acknowledged: 503 ``audit-unavailable``, and the action's own answer is withheld. This is
the interface of the ``ingest`` helper's ``api/admin_audit.py``; when both are merged this
module becomes a thin alias of it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from streams.api.access import principal_of
from streams.api.ops_state import ops_of
from streams.api.problems import Problem

log = logging.getLogger("streams.api")


@dataclass
class Audit:
    actor: str
    action: str
    target: str
    details: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def audited(request: web.Request, action: str, target: str) -> AsyncIterator[Audit]:
    principal = principal_of(request)
    audit = Audit(principal.id, action, target)
    outcome = "ok"
    try:
        yield audit
    except Problem as problem:
        outcome = f"refused:{problem.status}"
        await _publish(request, audit, outcome, principal.tenant)
        raise
    except Exception as exc:
        outcome = f"error:{type(exc).__name__}"
        await _publish(request, audit, outcome, principal.tenant)
        raise
    await _publish(request, audit, outcome, principal.tenant)


async def _publish(request: web.Request, audit: Audit, outcome: str, tenant: str | None) -> None:
    ops = ops_of(request)
    details = {**audit.details, "outcome": outcome}
    if tenant:
        details["tenant"] = tenant
    payload = {
        "subject_id": audit.target,
        "actor_id": audit.actor,
        "action": audit.action,
        "details": details,
    }
    try:
        await ops.publisher().publish_async("audit.admin_action", payload)
    except Exception as exc:
        log.warning("audit of %s %s not acknowledged: %s", audit.action, audit.target, exc)
        raise Problem(
            503, "audit-unavailable", "the audit event was not acknowledged; nothing is answered"
        ) from None
