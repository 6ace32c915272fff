"""``streams dlq list|show|stats``: read a family's dead-letter topic.

Reads with ``assign()`` and never commits (see ``streams.dlq.reader``), so it can run
beside the workers at any time. Exit codes: 0 done (an empty DLQ included), 1 error
(unknown family, bad position, missing topic, unreachable cluster).
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import click
from pydantic import ValidationError

from streams.core.headers import DLQ_REASONS
from streams.errors import ConfigError, StreamsError
from streams.settings import Settings

_MESSAGE_WIDTH = 72


def _fail(exc: StreamsError | str) -> Any:
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(1)


def _open(family: str) -> tuple[Settings, str, Any]:
    """Settings, the family's DLQ topic and a reader; errors for an unknown family."""
    from streams.catalog import load_catalog
    from streams.dlq.reader import DlqReader
    from streams.dlq.records import dlq_topic_for

    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid STREAMS_* settings: {exc}") from None
    catalog = load_catalog(settings.catalog_path)
    topic = dlq_topic_for(settings, catalog, family)
    return settings, topic, DlqReader(settings, topic)


def _store(settings: Settings) -> Any:
    from streams.serde import SchemaStore

    try:
        return SchemaStore.load(settings.schemas_dir)
    except StreamsError:
        return None  # values are then shown as hex, marked undecodable


def _short_class(name: str) -> str:
    return name.rsplit(".", 1)[-1] if name else "-"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


@click.group()
def dlq() -> None:
    """Inspect a family's dead-letter topic (<prefix><family>.dlq).

    Records are addressed as PARTITION:OFFSET. Nothing here joins a consumer group or
    commits offsets.
    """


@dlq.command("list")
@click.argument("family")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="show at most this many records (the most recent ones)",
)
@click.option(
    "--reason",
    type=click.Choice(DLQ_REASONS, case_sensitive=False),
    default=None,
    help="only records dead-lettered for this reason (scans the whole topic)",
)
@click.option("--json", "as_json", is_flag=True, help="a JSON array, one object per record")
def list_command(family: str, limit: int, reason: str | None, as_json: bool) -> None:
    """The most recent DLQ records of FAMILY, oldest first."""
    from streams.dlq.records import iso_ms, latest, with_reason

    try:
        _settings, topic, reader = _open(family)
        with reader:
            ranges = reader.partitions()
            total = sum(r.count for r in ranges)
            if reason is None:
                records = reader.newest(limit, ranges)
                matching = total
            else:
                found = with_reason(reader.scan(ranges), reason)
                matching = len(found)
                records = latest(found, limit)
    except StreamsError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps([r.summary() for r in records], indent=2, ensure_ascii=False))
        return
    noun = f"{matching} record{'s' if matching != 1 else ''}"
    what = f"{noun} with reason {reason} (of {total})" if reason else noun
    parts = f"{len(ranges)} partition{'s' if len(ranges) != 1 else ''}"
    shown = f", showing the latest {len(records)}" if len(records) < matching else ""
    click.echo(f"{topic}: {what} in {parts}{shown}")
    if not records:
        return
    width = max(_MESSAGE_WIDTH, shutil.get_terminal_size((160, 24)).columns - 70)
    pos_w = max(8, *(len(r.position) for r in records))
    click.echo(
        f"{'POSITION':<{pos_w}}  {'FAILED AT (UTC)':<24}  {'REASON':<11}  {'ATT':>3}  "
        f"{'EVENT ID':<36}  ERROR"
    )
    for r in records:
        error = f"{_short_class(r.error_class)}: {r.error_message}" if r.error_class else "-"
        attempt = str(r.attempt) if r.attempt is not None else "-"
        event_id = _clip(r.event_id or "-", 36)
        click.echo(
            f"{r.position:<{pos_w}}  {iso_ms(r.failed_at_ms) or '-':<24}  {r.reason:<11}  "
            f"{attempt:>3}  {event_id:<36}  {_clip(error, width)}"
        )
    click.echo(f"details: streams dlq show {family} {records[-1].position}")


@dlq.command("show")
@click.argument("family")
@click.argument("position", metavar="PARTITION:OFFSET")
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.option(
    "--decrypt",
    "key_file",
    default=None,
    metavar="KEYFILE",
    help="open sensitive fields with the keys in KEYFILE (<key id>=<base64> entries); "
    "without it they are shown as ciphertext",
)
def show_command(family: str, position: str, as_json: bool, key_file: str | None) -> None:
    """One DLQ record of FAMILY: every failure header and the decoded value (sensitive
    fields stay ciphertext unless ``--decrypt KEYFILE`` is given)."""
    from streams.core import headers as h
    from streams.dlq.records import describe_value, iso_ms, parse_position

    try:
        partition, offset = parse_position(position)
        settings, topic, reader = _open(family)
        with reader:
            record = reader.get(partition, offset)
    except StreamsError as exc:
        _fail(exc)
        return
    value = describe_value(_store(settings), record.value)
    if key_file is not None and value.decoded is not None and record.value is not None:
        from streams.crypto import decrypted_record, read_key_file
        from streams.dlq.records import ValueView

        try:
            opened = decrypted_record(_store(settings), record.value, read_key_file(key_file))
        except StreamsError as exc:
            _fail(exc)
            return
        value = ValueView(size=value.size, decoded=opened, schema=value.schema)
    if as_json:
        body = record.summary() | {"headers": record.headers, "value": value.as_json()}
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
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
    shown = {
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
    click.echo(f"{topic} {record.position}")
    for name, text in rows:
        click.echo(f"  {name:<14} {text}")
    others = {k: v for k, v in record.headers.items() if k not in shown}
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


@dlq.command("stats")
@click.argument("family")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="how many error groups to show",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
def stats_command(family: str, top: int, as_json: bool) -> None:
    """Counts of FAMILY's DLQ by reason, event type and error (fingerprint)."""
    from streams.dlq.records import iso_ms, summarize

    try:
        _settings, topic, reader = _open(family)
        with reader:
            stats = summarize(topic, reader.scan())
    except StreamsError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(stats.as_json(top), indent=2, ensure_ascii=False))
        return
    click.echo(f"{topic}: {stats.total} record{'s' if stats.total != 1 else ''}")
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
