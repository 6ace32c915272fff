"""The audit hash chain: chaining entries and naming each kind of break."""

from __future__ import annotations

from typing import Any

import pytest

from streams.events import build_event
from streams.jobs.audit_chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainHead,
    chain_entries,
    entry_from_event,
    row_hash,
    verify_chains,
)


def entry(event_id: str, subject: str = "claim-1", actor: str = "u1") -> AuditEntry:
    return AuditEntry(event_id, "audit.claim_submitted", "t1", subject, actor, 1000, '{"a":1}')


def chained(*entries: AuditEntry) -> tuple[list[dict[str, Any]], dict[str, ChainHead]]:
    return chain_entries(entries, {}, recorded_at_ms=5000)


def sorted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["subject_id"], r["seq"]))


def test_each_subject_has_its_own_chain_from_genesis() -> None:
    rows, heads = chained(entry("e1"), entry("e2", "claim-2"), entry("e3"))
    by_id = {r["event_id"]: r for r in rows}
    assert [by_id[i]["seq"] for i in ("e1", "e2", "e3")] == [1, 1, 2]
    assert by_id["e1"]["prev_hash"] == by_id["e2"]["prev_hash"] == GENESIS_HASH
    assert by_id["e3"]["prev_hash"] == by_id["e1"]["hash"]
    assert heads == {
        "claim-1": ChainHead(2, by_id["e3"]["hash"]),
        "claim-2": ChainHead(1, by_id["e2"]["hash"]),
    }
    assert verify_chains(sorted_rows(rows), heads) == []


def test_a_batch_continues_from_the_stored_head() -> None:
    first, heads = chained(entry("e1"))
    more, new_heads = chain_entries([entry("e2")], heads, recorded_at_ms=6000)
    assert more[0]["seq"] == 2 and more[0]["prev_hash"] == first[0]["hash"]
    assert verify_chains(first + more, new_heads) == []


def test_the_hash_covers_every_stored_field() -> None:
    rows, _ = chained(entry("e1"))
    for name in (
        "event_id",
        "actor_id",
        "payload",
        "occurred_at_ms",
        "recorded_at_ms",
        "tenant_id",
    ):
        edited = dict(
            rows[0], **{name: rows[0][name] * 2 if isinstance(rows[0][name], int) else "x"}
        )
        assert row_hash(edited) != rows[0]["hash"], name


def _three() -> tuple[list[dict[str, Any]], dict[str, ChainHead]]:
    return chained(entry("e1"), entry("e2"), entry("e3"))


def test_an_edited_row_is_named() -> None:
    rows, heads = _three()
    rows[1]["actor_id"] = "mallory"
    problems = verify_chains(rows, heads)
    assert [(p.subject_id, p.seq, p.event_id) for p in problems] == [("claim-1", 2, "e2")]
    assert "edited" in problems[0].reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    rows, heads = _three()
    rows[1]["actor_id"] = "mallory"
    rows[1]["hash"] = row_hash(rows[1])
    problems = verify_chains(rows, heads)
    assert [(p.seq, p.event_id) for p in problems] == [(3, "e3")]
    assert "prev_hash" in problems[0].reason


@pytest.mark.parametrize(
    ("deleted", "where", "says"),
    [(1, 3, "missing"), (0, 2, "missing"), (2, 3, "rows deleted at the end")],
)
def test_a_deleted_row_is_named(deleted: int, where: int, says: str) -> None:
    rows, heads = _three()
    del rows[deleted]
    problems = verify_chains(rows, heads)
    assert len(problems) == 1
    assert problems[0].seq == where and says in problems[0].reason


def test_a_chain_with_every_row_deleted_is_named() -> None:
    rows, heads = _three()
    problems = verify_chains([], heads)
    assert [(p.subject_id, p.reason) for p in problems] == [
        ("claim-1", "every row of the chain is missing")
    ]
    assert "claim-1" in str(problems[0])
    assert verify_chains(rows, {}) and "without a chain head" in verify_chains(rows, {})[0].reason


def test_entry_from_an_event_keeps_the_payload_canonical() -> None:
    event = build_event(
        "audit.admin_action",
        {
            "subject_id": "user-9",
            "actor_id": "admin-1",
            "action": "user.suspend",
            "details": {"b": "2", "a": "1"},
        },
        event_id="ev-1",
        tenant_id="acme",
        occurred_at_ms=1234,
        producer="api",
    )
    got = entry_from_event(event)
    assert (got.event_id, got.event_type, got.tenant_id, got.subject_id, got.actor_id) == (
        "ev-1",
        "audit.admin_action",
        "acme",
        "user-9",
        "admin-1",
    )
    assert got.occurred_at_ms == 1234
    assert got.payload == (
        '{"action":"user.suspend","correlation_id":null,"details":{"a":"1","b":"2"},"producer":"api"}'
    )
