"""``streams dlq list|export|show|stats``: read a family's dead-letter topic.

Reads with ``assign()`` and never commits (see ``streams.dlq.reader``), so it can run
beside the workers at any time. Records marked resolved (``streams dlq delete|purge``) are
hidden unless ``--include-resolved``. The write side (redrive, delete, purge) is
``streams.cli_dlq_ops``. Exit codes: 0 done (an empty DLQ included), 1 error (unknown
family, bad position or filter, missing topic, unreachable cluster).
"""

from __future__ import annotations

import heapq
import json
import shutil
import sys
from typing import Any

import click

from streams.cli_dlq_common import (
    build_filter,
    fail,
    filter_options,
    open_family,
    progress_option,
    scan,
)
from streams.errors import StreamsError

_MESSAGE_WIDTH = 72


def _short_class(name: str) -> str:
    return name.rsplit(".", 1)[-1] if name else "-"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


@click.group()
def dlq() -> None:
    """Inspect and operate a family's dead-letter topic (<prefix><family>.dlq).

    Records are addressed as PARTITION:OFFSET. Reading joins no consumer group and
    commits nothing.
    """


_include_resolved = click.option(
    "--include-resolved", is_flag=True, help="also records marked resolved or parked"
)


@dlq.command("list")
@click.argument("family")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="show at most this many matching records (the most recent ones)",
)
@filter_options
@_include_resolved
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table")
@click.option("--json", "as_json", is_flag=True, help="a JSON array, one object per record")
@progress_option
def list_command(
    family: str,
    limit: int,
    include_resolved: bool,
    fmt: str,
    as_json: bool,
    progress: bool | None,
    **kw: Any,
) -> None:
    """The most recent matching DLQ records of FAMILY, oldest first (memory: --limit)."""
    from streams.dlq.records import iso_ms
    from streams.dlq.views import RecordWriter

    try:
        selection = build_filter(kw)
        opened = open_family(family)
        with opened.reader:
            ranges = opened.reader.partitions()
            total = sum(r.count for r in ranges)
            matching = 0
            heap: list[tuple[tuple[int, int, int], Any]] = []
            for record, tenant, state in scan(
                opened, selection, include_resolved=include_resolved, progress=progress
            ):
                matching += 1
                order = (record.failed_at_ms or 0, record.partition, record.offset)
                item = (order, (record, tenant, state))
                if len(heap) < limit:
                    heapq.heappush(heap, item)
                elif order > heap[0][0]:
                    heapq.heapreplace(heap, item)
            rows = [row for _order, row in sorted(heap, key=lambda i: i[0])]
    except StreamsError as exc:
        fail(exc)
        return
    if as_json:
        out = [r.summary() | {"tenant_id": t, "state": s or "open"} for r, t, s in rows]
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    if fmt != "table":
        writer = RecordWriter(sys.stdout, fmt)
        for r, t, s in rows:
            writer.write(r, t, s)
        return
    described = selection.describe()
    noun = f"{matching} record{'s' if matching != 1 else ''}"
    if not described:
        what = noun
    elif list(described) == ["reasons"] and len(described["reasons"]) == 1:
        what = f"{noun} with reason {described['reasons'][0]} (of {total})"
    else:
        what = f"{noun} matching {json.dumps(described)} (of {total})"
    parts = f"{len(ranges)} partition{'s' if len(ranges) != 1 else ''}"
    shown = f", showing the latest {len(rows)}" if len(rows) < matching else ""
    click.echo(f"{opened.topic}: {what} in {parts}{shown}")
    if not rows:
        return
    width = max(_MESSAGE_WIDTH, shutil.get_terminal_size((160, 24)).columns - 70)
    pos_w = max(8, *(len(r.position) for r, _t, _s in rows))
    click.echo(
        f"{'POSITION':<{pos_w}}  {'FAILED AT (UTC)':<24}  {'REASON':<11}  {'ATT':>3}  "
        f"{'EVENT ID':<36}  ERROR"
    )
    for r, _tenant, state in rows:
        error = f"{_short_class(r.error_class)}: {r.error_message}" if r.error_class else "-"
        attempt = str(r.attempt) if r.attempt is not None else "-"
        marker = f" [{state}]" if state else ""
        click.echo(
            f"{r.position:<{pos_w}}  {iso_ms(r.failed_at_ms) or '-':<24}  {r.reason:<11}  "
            f"{attempt:>3}  {_clip(r.event_id or '-', 36):<36}  {_clip(error, width)}{marker}"
        )
    click.echo(f"details: streams dlq show {family} {rows[-1][0].position}")


@dlq.command("export")
@click.argument("family")
@filter_options
@_include_resolved
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "table"]),
    default="jsonl",
    show_default=True,
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="file to write (default: stdout)",
)
@progress_option
def export_command(
    family: str,
    include_resolved: bool,
    fmt: str,
    output: str,
    progress: bool | None,
    **kw: Any,
) -> None:
    """Every matching DLQ record of FAMILY in DLQ order, streamed (one record in memory)."""
    from streams.dlq.views import RecordWriter

    try:
        selection = build_filter(kw)
        opened = open_family(family)
        out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            writer = RecordWriter(out, fmt)
            with opened.reader:
                for record, tenant, state in scan(
                    opened,
                    selection,
                    include_resolved=include_resolved,
                    want_tenant=True,
                    progress=progress,
                ):
                    writer.write(record, tenant, state)
        finally:
            if out is not sys.stdout:
                out.close()
    except StreamsError as exc:
        fail(exc)
        return
    if output != "-":
        click.echo(f"exported {writer.count} records of {opened.topic} to {output}", err=True)


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
    """One DLQ record of FAMILY: every header and the decoded value (sensitive fields stay
    ciphertext unless ``--decrypt KEYFILE`` is given)."""
    from streams.cli_dlq_show import render_show
    from streams.dlq.kafka_io import StateStore
    from streams.dlq.records import describe_value, parse_position
    from streams.dlq.replay import source_of

    try:
        partition, offset = parse_position(position)
        opened = open_family(family)
        with opened.reader:
            record = opened.reader.get(partition, offset)
        state = StateStore(opened.settings).load(opened.topic).get(source_of(record))
    except StreamsError as exc:
        fail(exc)
        return
    value = describe_value(opened.store, record.value)
    if key_file is not None and value.decoded is not None and record.value is not None:
        from streams.crypto import decrypted_record, read_key_file
        from streams.dlq.records import ValueView

        try:
            plain = decrypted_record(opened.store, record.value, read_key_file(key_file))
        except StreamsError as exc:
            fail(exc)
            return
        value = ValueView(size=value.size, decoded=plain, schema=value.schema)
    if as_json:
        body = record.summary() | {
            "headers": record.headers,
            "value": value.as_json(),
            "state": state or "open",
        }
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    render_show(opened.topic, record, value, state)


@dlq.command("stats")
@click.argument("family")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="how many error groups to show",
)
@filter_options
@_include_resolved
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@progress_option
def stats_command(
    family: str,
    top: int,
    include_resolved: bool,
    as_json: bool,
    progress: bool | None,
    **kw: Any,
) -> None:
    """Counts of FAMILY's DLQ by reason, event type, tenant, error (fingerprint) and age."""
    from streams.cli_dlq_show import render_stats
    from streams.dlq.records import DlqStats
    from streams.dlq.views import Breakdown

    try:
        selection = build_filter(kw)
        opened = open_family(family)
        hidden = [0]
        with opened.reader:
            breakdown = Breakdown(DlqStats(opened.topic))
            for record, tenant, _state in scan(
                opened,
                selection,
                include_resolved=include_resolved,
                want_tenant=True,
                progress=progress,
                hidden=hidden,
            ):
                breakdown.add(record, tenant)
            breakdown.resolved = hidden[0]
    except StreamsError as exc:
        fail(exc)
        return
    if as_json:
        click.echo(json.dumps(breakdown.as_json(top), indent=2, ensure_ascii=False))
        return
    render_stats(breakdown, top)


from streams.cli_dlq_ops import register  # noqa: E402  (the write side adds its commands)

register(dlq)
