"""The audit route's pure parts: query-string parsing and the tenant decision."""

from __future__ import annotations

import pytest

from streams.api.audit_params import AuditQuery, cursor, parse_audit_query
from streams.api.problems import Problem
from streams.api.roles import Principal, effective_roles
from streams.api.tenancy import tenant_scope
from streams.jobs.audit_store import ANY_TENANT


def parse(**params: str | list[str]) -> AuditQuery:
    as_lists = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
    return parse_audit_query(as_lists, max_limit=1000)


def test_every_parameter_parses() -> None:
    q = parse(
        subject="c1",
        actor="ann",
        event_type="audit.claim_submitted",
        tenant="acme",
        since="2026-12-01T10:00:00Z",
        until="1796126400001",
        after=cursor(1_700_000_000_000, 42),
        limit="25",
    )
    assert q == AuditQuery(
        subject="c1",
        actor="ann",
        event_type="audit.claim_submitted",
        tenant="acme",
        since_ms=1_796_119_200_000,
        until_ms=1_796_126_400_001,
        after=(1_700_000_000_000, 42),
        limit=25,
    )
    assert parse(since="2026-12-01T10:00:00").since_ms == 1_796_119_200_000  # naive = UTC
    assert parse(since="2026-12-01T11:00:00+01:00").since_ms == 1_796_119_200_000
    assert parse() == AuditQuery()


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "99999999999999999999"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"since": "2000", "until": "1000"}, "until"),
        ({"after": "42"}, "after"),
        ({"after": "a.b"}, "after"),
        ({"after": "1.-2"}, "after"),
        ({"subject": ""}, "subject"),
        ({"actor": "x" * 257}, "actor"),
        ({"subjct": "c1"}, "subjct"),
        ({"subject": ["a", "b"]}, "subject"),
    ],
)
def test_bad_values_are_400_naming_the_parameter(
    params: dict[str, str | list[str]], parameter: str
) -> None:
    with pytest.raises(Problem) as failed:
        parse(**params)
    assert failed.value.status == 400
    assert failed.value.body()["parameter"] == parameter
    assert failed.value.detail.startswith(f"{parameter}: ")


def who(roles: list[str], tenant: str | None) -> Principal:
    return Principal("p", effective_roles(roles), tenant, "jwt")


@pytest.mark.parametrize(
    ("roles", "claim", "requested", "expected"),
    [
        (["viewer"], "acme", None, "acme"),
        (["viewer"], "acme", "acme", "acme"),
        (["viewer"], "acme", "other", 403),
        (["admin"], "acme", "other", 403),  # a tenant's admin stays in its tenant
        (["admin"], "acme", "*", 403),
        (["viewer"], None, None, 403),
        (["operator"], None, "acme", 403),
        (["admin"], None, None, 400),
        (["admin"], None, "acme", "acme"),
        (["admin"], None, "*", ANY_TENANT),
    ],
)
def test_the_tenant_claim_is_the_only_tenant_a_principal_reads(
    roles: list[str], claim: str | None, requested: str | None, expected: object
) -> None:
    if isinstance(expected, int):
        with pytest.raises(Problem) as failed:
            tenant_scope(who(roles, claim), requested)
        assert failed.value.status == expected
    else:
        assert tenant_scope(who(roles, claim), requested) is expected or (
            tenant_scope(who(roles, claim), requested) == expected
        )
