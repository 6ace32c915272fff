"""Roles, principals, and which role implies which.

``admin`` implies ``operator`` and ``producer`` (issue 13: admin may do everything);
``operator`` implies ``viewer``. ``producer`` (ingest) implies nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    PRODUCER = "producer"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


_IMPLIES: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset({Role.OPERATOR, Role.VIEWER, Role.PRODUCER}),
    Role.OPERATOR: frozenset({Role.VIEWER}),
}


def effective_roles(names: Iterable[str]) -> frozenset[Role]:
    """The roles ``names`` grant, implied ones included; unknown names grant nothing."""
    known = {Role(n) for n in names if n in Role.__members__.values()}
    implied = {r for role in known for r in _IMPLIES.get(role, ())}
    return frozenset(known | implied)


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``id`` (the JWT ``sub`` or the API key's principal), its effective
    roles, its tenant (None: not bound to one) and the credential kind (``jwt``/``api_key``)."""

    id: str
    roles: frozenset[Role]
    tenant: str | None
    via: str

    def has(self, role: Role) -> bool:
        return role in self.roles
