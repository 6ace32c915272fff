"""The audit log in the SQL store: batched idempotent appends, queries, verification.

``append(entries)`` writes many entries in one transaction: entries whose event id is
already stored are duplicates (a redelivery: nothing written, reported ``False``); the
others are appended to their subjects' hash chains (``audit_chain``). The chain heads
of the batch's subjects are locked first (PostgreSQL ``FOR UPDATE``; SQLite's write
transaction already excludes other writers), so two workers briefly owning the same
partition during a rebalance cannot fork a chain. A unique violation left despite that
(two writers inserting the first row of a subject, or the same event, at once) is
``Retryable``: the next attempt finds the row and reports a duplicate.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Select, and_, func, insert, or_, select

from streams.errors import HandlerError, Retryable
from streams.jobs.audit_chain import AuditEntry, ChainHead, ChainProblem, ChainVerifier
from streams.jobs.audit_chain import chain_entries as _chain
from streams.store.database import Database
from streams.store.errors import is_unique_violation
from streams.store.schema import audit_chain_heads as heads_t
from streams.store.schema import audit_records as records_t

VERIFY_PAGE_ROWS = 2000
MAX_QUERY_ROWS = 10_000


class _AnyTenant:
    def __repr__(self) -> str:
        return "ANY_TENANT"


ANY_TENANT = _AnyTenant()
"""``query_audit(tenant_id=ANY_TENANT)``: every tenant's rows (operators only)."""

TenantFilter = str | _AnyTenant | None
"""``query_audit``'s ``tenant_id``: a tenant, None (rows without one) or ``ANY_TENANT``."""


@dataclass(frozen=True)
class AuditRecord:
    """One stored audit row (``payload`` decoded)."""

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def append(db: Database, entries: Sequence[AuditEntry]) -> list[bool]:
    """Store ``entries`` in one transaction; per entry True (written) or False (its event
    id was already stored, or came earlier in this batch). Raises Retryable/Permanent."""
    try:
        return await _append(db, entries)
    except HandlerError as exc:
        if exc.__cause__ is not None and is_unique_violation(exc.__cause__):
            raise Retryable(f"audit: concurrent write ({exc})") from exc
        raise


async def _append(db: Database, entries: Sequence[AuditEntry]) -> list[bool]:
    async with db.transaction() as conn:
        ids = [e.event_id for e in entries]
        stored = set(
            await conn.scalars(select(records_t.c.event_id).where(records_t.c.event_id.in_(ids)))
        )
        written: list[bool] = []
        fresh: list[AuditEntry] = []
        for entry in entries:
            is_new = entry.event_id not in stored
            written.append(is_new)
            if is_new:
                stored.add(entry.event_id)
                fresh.append(entry)
        if not fresh:
            return written
        subjects = sorted({e.subject_id for e in fresh})
        head_query = select(heads_t.c.subject_id, heads_t.c.seq, heads_t.c.hash).where(
            heads_t.c.subject_id.in_(subjects)
        )
        if db.dialect == "postgresql":
            head_query = head_query.order_by(heads_t.c.subject_id).with_for_update()
        heads = {r.subject_id: ChainHead(r.seq, r.hash) for r in await conn.execute(head_query)}
        now_ms = _now_ms()
        rows, new_heads = _chain(fresh, heads, now_ms)
        await conn.execute(insert(records_t), rows)
        await conn.execute(
            _upsert_heads(db.dialect),
            [
                {"subject_id": s, "seq": h.seq, "hash": h.hash, "updated_at_ms": now_ms}
                for s, h in new_heads.items()
            ],
        )
        return written


@functools.cache
def _upsert_heads(dialect: str) -> Any:
    """INSERT .. ON CONFLICT (subject_id) DO UPDATE, run with one parameter set per head."""
    from sqlalchemy.dialects import postgresql, sqlite

    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(heads_t)
    return stmt.on_conflict_do_update(
        index_elements=[heads_t.c.subject_id],
        set_={
            "seq": stmt.excluded.seq,
            "hash": stmt.excluded.hash,
            "updated_at_ms": stmt.excluded.updated_at_ms,
        },
    )


def _query(
    tenant_id: str | _AnyTenant | None,
    subject_id: str | None,
    actor_id: str | None,
    event_type: str | None,
    since_ms: int | None,
    until_ms: int | None,
) -> Select[Any]:
    q = select(records_t)
    if tenant_id is None:
        q = q.where(records_t.c.tenant_id.is_(None))
    elif isinstance(tenant_id, str):
        q = q.where(records_t.c.tenant_id == tenant_id)
    for column, value in (
        (records_t.c.subject_id, subject_id),
        (records_t.c.actor_id, actor_id),
        (records_t.c.event_type, event_type),
    ):
        if value is not None:
            q = q.where(column == value)
    if since_ms is not None:
        q = q.where(records_t.c.occurred_at_ms >= since_ms)
    if until_ms is not None:
        q = q.where(records_t.c.occurred_at_ms < until_ms)
    return q


async def query_audit(
    db: Database,
    *,
    tenant_id: str | _AnyTenant | None,
    subject_id: str | None = None,
    actor_id: str | None = None,
    event_type: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    after: tuple[int, int] | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Audit records of one tenant, oldest first (by ``occurred_at_ms``, then id).

    ``tenant_id`` is required: a tenant's id, None for records without a tenant, or
    ``ANY_TENANT`` (operator tools only). ``since_ms``/``until_ms`` bound the event time
    (inclusive/exclusive, ms since the epoch); ``after=(occurred_at_ms, id)`` continues
    after that record in the result order (keyset paging that stays exact when event times
    arrive out of id order);
    ``limit`` is 1..10,000. Raises ValueError for a bad limit.
    """
    if not 1 <= limit <= MAX_QUERY_ROWS:
        raise ValueError(f"limit must be 1..{MAX_QUERY_ROWS}, got {limit}")
    q = _query(tenant_id, subject_id, actor_id, event_type, since_ms, until_ms)
    if after is not None:
        q = q.where(
            or_(
                records_t.c.occurred_at_ms > after[0],
                and_(records_t.c.occurred_at_ms == after[0], records_t.c.id > after[1]),
            )
        )
    q = q.order_by(records_t.c.occurred_at_ms, records_t.c.id).limit(limit)
    async with db.transaction(write=False) as conn:
        rows = (await conn.execute(q)).mappings().all()
    return [AuditRecord(**{**row, "payload": json.loads(row["payload"])}) for row in rows]


async def _rows(db: Database) -> AsyncIterator[dict[str, Any]]:
    """Every audit row in (subject_id, seq) order, a page per transaction."""
    last: tuple[str, int] | None = None
    while True:
        q = select(records_t).order_by(records_t.c.subject_id, records_t.c.seq)
        if last is not None:
            q = q.where(
                or_(
                    records_t.c.subject_id > last[0],
                    and_(records_t.c.subject_id == last[0], records_t.c.seq > last[1]),
                )
            )
        async with db.transaction(write=False) as conn:
            page = [dict(r) for r in (await conn.execute(q.limit(VERIFY_PAGE_ROWS))).mappings()]
        for row in page:
            yield row
        if len(page) < VERIFY_PAGE_ROWS:
            return
        last = (page[-1]["subject_id"], page[-1]["seq"])


async def verify(db: Database) -> tuple[int, list[ChainProblem]]:
    """Check every subject's chain; returns (rows checked, problems found).

    Holds every chain head in memory (one small tuple per subject) and one subject's rows.
    Rows written while it runs may be reported as a head mismatch: verify a quiet store.
    """
    async with db.transaction(write=False) as conn:
        heads = {
            r.subject_id: ChainHead(r.seq, r.hash)
            for r in await conn.execute(select(heads_t.c.subject_id, heads_t.c.seq, heads_t.c.hash))
        }
    verifier = ChainVerifier(heads)
    problems: list[ChainProblem] = []
    async for row in _rows(db):
        problems += verifier.feed(row)
    problems += verifier.finish()
    return verifier.rows_checked, problems


async def duplicate_event_ids(db: Database) -> int:
    """Rows whose event id appears more than once (0 while the unique constraint holds)."""
    q = select(func.count()).select_from(
        select(records_t.c.event_id)
        .group_by(records_t.c.event_id)
        .having(func.count() > 1)
        .subquery()
    )
    async with db.transaction(write=False) as conn:
        return int((await conn.execute(q)).scalar_one())


__all__ = [
    "ANY_TENANT",
    "AuditRecord",
    "TenantFilter",
    "append",
    "duplicate_event_ids",
    "query_audit",
    "verify",
]
