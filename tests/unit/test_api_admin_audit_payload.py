"""The ``audit.admin_action`` payload the API publishes for an operator/admin action."""

from __future__ import annotations

from streams.api.admin_audit import AdminAction, admin_action_payload
from streams.api.roles import Principal, effective_roles
from streams.events import build_event


def test_payload_names_actor_action_target_and_outcome_and_validates() -> None:
    who = Principal("alice", effective_roles(["operator"]), "acme", "jwt")
    action = AdminAction(who, "pause", "family/email", "acme", {"reason": "incident"})
    payload = admin_action_payload(action, "refused:409")
    assert payload["subject_id"] == "family/email"
    assert payload["actor_id"] == "alice"
    assert payload["action"] == "pause"
    assert payload["details"] == {
        "reason": "incident",
        "outcome": "refused:409",
        "via": "jwt",
        "roles": "operator,viewer",
    }
    event = build_event("audit.admin_action", payload, tenant_id="acme")
    assert event.envelope.tenant_id == "acme"
