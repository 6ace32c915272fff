"""Which tenant a principal may read.

A principal with a ``tenant`` claim sees that tenant only, whatever its roles (an admin of
tenant ``acme`` is acme's admin); a ``tenant=`` naming another tenant is refused (403).
A principal without a tenant claim is a platform principal: an admin must name the tenant
(``tenant=acme``), or ``tenant=*`` for every tenant's rows including those without one;
any other role without a tenant claim sees nothing (403).
"""

from __future__ import annotations

from streams.api.problems import Problem, bad_parameter
from streams.api.roles import Principal, Role
from streams.jobs.audit_store import ANY_TENANT, TenantFilter

EVERY_TENANT = "*"


def tenant_scope(principal: Principal, requested: str | None) -> TenantFilter:
    """The tenant filter for ``principal`` asking for ``requested`` (the ``tenant``
    parameter, None when absent). Raises Problem (400 or 403)."""
    if principal.tenant is not None:
        if requested is not None and requested != principal.tenant:
            raise Problem(403, "tenant-forbidden", "tenant: outside this principal's tenant")
        return principal.tenant
    if not principal.has(Role.ADMIN):
        raise Problem(403, "tenant-forbidden", "this principal is bound to no tenant")
    if requested is None or requested == "":
        raise bad_parameter("tenant", "required for a principal without a tenant claim")
    return ANY_TENANT if requested == EVERY_TENANT else requested
