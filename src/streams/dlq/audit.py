"""DLQ admin actions as ``audit.admin_action`` events, published with the SDK Publisher.

subject = what was acted on (the DLQ topic or a redrive id), actor = who, action =
``dlq.redrive`` / ``dlq.redrive.dry_run`` / ``dlq.delete`` / ``dlq.purge``, details = the
filters, counts and outcome as strings (the event's ``details`` is a string map).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streams.catalog import Catalog
from streams.settings import Settings

__all__ = ["audit_details", "publish_admin_action"]

MAX_DETAIL_CHARS = 2000


def audit_details(body: Mapping[str, Any]) -> dict[str, str]:
    """A JSON-ready mapping flattened to strings (nested values as compact JSON)."""
    out: dict[str, str] = {}
    for key, value in body.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        out[str(key)] = text[:MAX_DETAIL_CHARS]
    return out


def publish_admin_action(
    settings: Settings,
    catalog: Catalog,
    *,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
) -> str:
    """Publish and wait for the acknowledgement; returns the audit event id."""
    from streams.publish.publisher import Publisher

    with Publisher(settings, catalog=catalog, producer_name="streams-dlq") as publisher:
        result = publisher.publish(
            "audit.admin_action",
            {
                "subject_id": subject,
                "actor_id": actor,
                "action": action,
                "details": audit_details(details),
            },
        )
    return str(result.event_id)
