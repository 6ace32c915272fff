"""The analytics tables (on the store's ``metadata``) and their idempotent writes.

Rows hold no personal data: counts are by day, scope, family, event type and outcome;
ratings keep the review id, the subject, the stars and the time, and drop the author's
user id entirely (it is not hashed: a hash of a guessable id is still a pseudonym).
Every write is an upsert on the table's natural key, so re-running a rollup rewrites the
same rows (migration ``0002_analytics`` creates the tables).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    and_,
    delete,
    func,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from streams.jobs.analytics_rollup import Rating
from streams.store.schema import metadata

BATCH_ROWS = 500

daily_event_counts = Table(
    "analytics_daily_event_counts",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("scope", String(256), primary_key=True),
    Column("family", String(64), primary_key=True),
    Column("event_type", String(128), primary_key=True),
    Column("outcome", String(64), primary_key=True),
    Column("events", BigInteger, nullable=False),
)
"""Events of a UTC day by family, type and outcome (done, pending, retrying, dlq.<reason>)."""

review_ratings = Table(
    "analytics_review_ratings",
    metadata,
    Column("scope", String(256), primary_key=True),
    Column("review_id", String(256), primary_key=True),
    Column("subject_id", String(256), nullable=False),
    Column("rating", Integer, nullable=False),
    Column("reviewed_at_ms", BigInteger, nullable=False),
    Index(None, "scope", "subject_id"),
)
"""Each review's latest rating (no author)."""

subject_ratings = Table(
    "analytics_subject_ratings",
    metadata,
    Column("scope", String(256), primary_key=True),
    Column("subject_id", String(256), primary_key=True),
    Column("reviews", Integer, nullable=False),
    Column("rating_sum", BigInteger, nullable=False),
    Column("average", Float, nullable=False),
)
"""Per subject: how many reviews, the sum of their stars and the average."""

rollup_runs = Table(
    "analytics_rollup_runs",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("scope", String(256), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("event_id", String(128), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("finished_at_ms", BigInteger, nullable=False),
)
"""The last run of each rollup (which request, how many rows it wrote, when)."""


def _upsert(
    conn: AsyncConnection,
    table: Table,
    keys: Sequence[str],
    where: Callable[[Any], Any] | None = None,
) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column (SQLite and PostgreSQL);
    ``where(excluded)`` limits which conflicting rows are updated."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    values = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    condition = None if where is None else where(stmt.excluded)
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=values, where=condition)


def _batches(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    for i in range(0, len(rows), BATCH_ROWS):
        yield rows[i : i + BATCH_ROWS]


async def write_daily_counts(
    conn: AsyncConnection, day: str, scope: str, counts: Counter[tuple[str, str, str]]
) -> int:
    """Make the day's rows equal ``counts``: upsert each key, delete keys no longer seen."""
    keys = ("day", "scope", "family", "event_type", "outcome")
    rows = [
        dict(zip(keys, (day, scope, *key), strict=True)) | {"events": n}
        for key, n in sorted(counts.items())
    ]
    for batch in _batches(rows):
        await conn.execute(_upsert(conn, daily_event_counts, keys), batch)
    t = daily_event_counts
    existing = await conn.execute(
        select(t.c.family, t.c.event_type, t.c.outcome).where(t.c.day == day, t.c.scope == scope)
    )
    stale = [tuple(r) for r in existing if tuple(r) not in counts]
    for i in range(0, len(stale), BATCH_ROWS):
        await conn.execute(
            delete(t).where(
                t.c.day == day,
                t.c.scope == scope,
                tuple_(t.c.family, t.c.event_type, t.c.outcome).in_(stale[i : i + BATCH_ROWS]),
            )
        )
    return len(rows)


async def write_ratings(conn: AsyncConnection, scope: str, ratings: Iterable[Rating]) -> int:
    """Upsert each review's rating (an older one never replaces a newer), then recompute
    the averages of the subjects touched; returns the subjects recomputed."""
    kept = list(ratings)
    rows: list[dict[str, Any]] = [
        {"scope": scope, "review_id": r.review_id, "subject_id": r.subject_id,
         "rating": r.rating, "reviewed_at_ms": r.reviewed_at_ms}
        for r in kept
    ]  # fmt: skip

    def newer(excluded: Any) -> Any:
        return review_ratings.c.reviewed_at_ms <= excluded.reviewed_at_ms

    for batch in _batches(rows):
        await conn.execute(_upsert(conn, review_ratings, ("scope", "review_id"), newer), batch)
    subjects = sorted({r.subject_id for r in kept})
    t = review_ratings
    for i in range(0, len(subjects), BATCH_ROWS):
        chunk = subjects[i : i + BATCH_ROWS]
        totals = await conn.execute(
            select(t.c.subject_id, func.count(), func.sum(t.c.rating))
            .where(and_(t.c.scope == scope, t.c.subject_id.in_(chunk)))
            .group_by(t.c.subject_id)
        )
        out = [
            {"scope": scope, "subject_id": s, "reviews": int(n), "rating_sum": int(total),
             "average": int(total) / int(n)}
            for s, n, total in totals
        ]  # fmt: skip
        if out:
            await conn.execute(_upsert(conn, subject_ratings, ("scope", "subject_id")), out)
    return len(subjects)


async def record_run(
    conn: AsyncConnection, day: str, scope: str, kind: str, event_id: str, rows: int, now_ms: int
) -> None:
    row = {"day": day, "scope": scope, "kind": kind, "event_id": event_id, "rows": rows,
           "finished_at_ms": now_ms}  # fmt: skip
    await conn.execute(_upsert(conn, rollup_runs, ("day", "scope", "kind")), [row])
