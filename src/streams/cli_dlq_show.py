"""Text rendering of ``streams dlq show`` and ``streams dlq stats``."""

from __future__ import annotations

import json
from typing import Any

import click

from streams.core import headers as h
from streams.dlq.records import DlqRecord, ValueView, iso_ms

_MESSAGE_WIDTH = 72
_SHOWN = {
    h.DLQ_REASON,
    h.ERROR_CLASS,
    h.ERROR_MESSAGE,
    h.ERROR_FINGERPRINT,
    h.ATTEMPT,
    h.EVENT_TYPE,
    h.EVENT_ID,
    h.ORIGINAL_TOPIC,
    h.ORIGINAL_PARTITION,
    h.ORIGINAL_OFFSET,
    h.FIRST_FAILURE_AT_MS,
    h.FAILED_AT_MS,
}


def _short_class(name: str) -> str:
    return name.rsplit(".", 1)[-1] if name else "-"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def render_show(topic: str, record: DlqRecord, value: ValueView, state: str | None) -> None:
    rows: list[tuple[str, str]] = [
        ("reason", record.reason),
        ("error class", record.error_class or "-"),
        ("error message", record.error_message or "-"),
        ("fingerprint", record.fingerprint),
        ("attempt", str(record.attempt) if record.attempt is not None else "-"),
        ("event", f"{record.event_type or '-'}  id {record.event_id or '-'}"),
        (
            "original",
            f"{record.original_topic or '-'} "
            f"{record.original_partition if record.original_partition is not None else '-'}:"
            f"{record.original_offset if record.original_offset is not None else '-'}",
        ),
        ("first failure", iso_ms(record.first_failure_at_ms) or "-"),
        ("dead-lettered", iso_ms(record.failed_at_ms) or "-"),
        ("key", record.summary()["key"] or "-"),
    ]
    if state:
        rows.append(("state", state))
    click.echo(f"{topic} {record.position}")
    for name, text in rows:
        click.echo(f"  {name:<14} {text}")
    others = {k: v for k, v in record.headers.items() if k not in _SHOWN}
    if others:
        click.echo("  other headers:")
        for name, text in others.items():
            if name.endswith("-at-ms") or name.endswith("timestamp-ms"):
                with_time = iso_ms(int(text)) if text.isdigit() else None
                text = f"{text} ({with_time})" if with_time else text
            click.echo(f"    {name}: {text}")
    if value.decoded is not None:
        click.echo(f"value ({value.schema}, {value.size} bytes):")
        for line in json.dumps(value.decoded, indent=2, ensure_ascii=False).splitlines():
            click.echo(f"  {line}")
    else:
        click.echo(f"value: UNDECODABLE ({value.size} bytes): {value.error}")
        click.echo(f"  hex: {value.hex_preview}")


def render_stats(breakdown: Any, top: int) -> None:
    stats = breakdown.stats
    click.echo(f"{stats.topic}: {stats.total} record{'s' if stats.total != 1 else ''}")
    if breakdown.resolved:
        click.echo(f"  ({breakdown.resolved} resolved or parked hidden; --include-resolved)")
    if not stats.total:
        return
    click.echo(
        f"  oldest {iso_ms(stats.oldest_ms) or '-'}   newest {iso_ms(stats.newest_ms) or '-'}"
    )
    click.echo("by reason:")
    for reason, count in stats.by_reason.most_common():
        click.echo(f"  {count:>7}  {reason}")
    click.echo("by event type:")
    for event_type, count in stats.by_event_type.most_common():
        click.echo(f"  {count:>7}  {event_type}")
    click.echo("by tenant:")
    for tenant, count in breakdown.by_tenant.most_common(top):
        click.echo(f"  {count:>7}  {tenant}")
    groups = stats.top_groups(top)
    more = len(stats.groups) - len(groups)
    click.echo(
        f"by error ({len(stats.groups)} distinct fingerprint"
        f"{'s' if len(stats.groups) != 1 else ''}{f', top {len(groups)}' if more > 0 else ''}):"
    )
    click.echo(f"  {'COUNT':>7}  {'FINGERPRINT':<16}  {'REASONS':<18}  {'EXAMPLE':<9}  ERROR")
    for g in groups:
        reasons = ",".join(g.reasons)
        error = f"{_short_class(g.error_class)}: {g.sample_message}"
        click.echo(
            f"  {g.count:>7}  {g.fingerprint:<16}  {_clip(reasons, 18):<18}  {g.example:<9}  "
            f"{_clip(error, _MESSAGE_WIDTH)}"
        )
    per_day = sorted(breakdown.per_day.items())
    click.echo("per day (UTC):")
    for start_ms, count in per_day[-14:]:
        click.echo(f"  {count:>7}  {(iso_ms(start_ms) or '-')[:10]}")
    per_hour = sorted(breakdown.per_hour.items())
    click.echo("per hour (UTC, latest 24):")
    for start_ms, count in per_hour[-24:]:
        click.echo(f"  {count:>7}  {(iso_ms(start_ms) or '-')[:13]}:00")
