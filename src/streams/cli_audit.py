"""``streams audit query|verify``: read and check the audit log in the SQL store.

Both connect to ``STREAMS_DATABASE_URL`` (default: the SQLite file under STREAMS_HOME).
Exit codes: 0 done, 1 error or (verify) a broken chain, listing each break.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from streams.errors import ConfigError, HandlerError

T = TypeVar("T")


def parse_time_ms(value: str, *, now_ms: int | None = None) -> int:
    """``value`` as ms since the epoch: an ISO-8601 time or date (UTC unless it says), or
    a duration ago (``30m``, ``2h``, ``7d``). Raises ValueError naming the accepted forms."""
    from streams.core.durations import parse_duration_ms

    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    else:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    if text and not text[0].isdigit():
        raise ValueError(
            f"expected an ISO time (2026-12-01T10:00Z) or a duration ago (2h): {value!r}"
        )
    try:
        ago_ms = parse_duration_ms(text)
    except ValueError:
        raise ValueError(
            f"expected an ISO time (2026-12-01T10:00Z) or a duration ago (2h): {value!r}"
        ) from None
    return (time.time_ns() // 1_000_000 if now_ms is None else now_ms) - ago_ms


def _with_db(work: Callable[[Any], Awaitable[T]]) -> T:
    from streams.store.database import Database
    from streams.store.settings import StoreSettings

    try:
        settings = StoreSettings()
    except ValidationError as exc:
        raise ConfigError(f"invalid STREAMS_* store settings: {exc}") from None

    async def run() -> T:
        db = Database.from_settings(settings)
        try:
            await db.migrate()
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except HandlerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _time_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@click.group("audit")
def audit() -> None:
    """Query and verify the audit log (the ``audit`` family's rows in the SQL store)."""


@audit.command("query")
@click.option("--subject", "subject_id", help="Only this subject (claim id, target).")
@click.option("--actor", "actor_id", help="Only this actor.")
@click.option("--type", "event_type", help="Only this event type, e.g. audit.admin_action.")
@click.option("--since", help="Event time from: ISO time/date (UTC) or a duration ago (2h, 7d).")
@click.option("--until", help="Event time before: same forms as --since.")
@click.option("--tenant", "tenant_id", help="Only this tenant (default: every tenant).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def query(
    subject_id: str | None,
    actor_id: str | None,
    event_type: str | None,
    since: str | None,
    until: str | None,
    tenant_id: str | None,
    limit: int,
    fmt: str,
) -> None:
    """List audit records, oldest first (json: one object per line)."""
    from streams.jobs.audit_store import ANY_TENANT, query_audit

    try:
        since_ms = parse_time_ms(since) if since else None
        until_ms = parse_time_ms(until) if until else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    records = _with_db(
        lambda db: query_audit(
            db,
            tenant_id=ANY_TENANT if tenant_id is None else tenant_id,
            subject_id=subject_id,
            actor_id=actor_id,
            event_type=event_type,
            since_ms=since_ms,
            until_ms=until_ms,
            limit=limit,
        )
    )
    if fmt == "json":
        for record in records:
            click.echo(json.dumps(record.as_dict(), sort_keys=True))
        return
    click.echo(f"{'occurred_at (UTC)':<29} {'type':<22} {'subject':<20} {'actor':<16} seq  tenant")
    for r in records:
        click.echo(
            f"{_time_text(r.occurred_at_ms):<29} {r.event_type:<22} {r.subject_id:<20} "
            f"{r.actor_id:<16} {r.seq:<4} {r.tenant_id or '-'}"
        )
    click.echo(f"{len(records)} record(s)")


@audit.command("verify")
def verify() -> None:
    """Check every subject's hash chain; exit 1 naming each edited or deleted row."""
    from streams.jobs.audit_store import verify as verify_chains

    rows, problems = _with_db(verify_chains)
    for problem in problems:
        click.echo(f"BROKEN {problem}")
    if problems:
        click.echo(f"audit verify: {len(problems)} problem(s) in {rows} row(s)", err=True)
        sys.exit(1)
    click.echo(f"audit verify: {rows} row(s), every chain intact")
