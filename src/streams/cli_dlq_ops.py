"""``streams dlq redrive|redrives|delete|purge``: the write side of DLQ operations.

``redrive`` (``streams.dlq.redrive``) sends matching records through the family again;
``delete`` and ``purge`` mark records resolved in the compacted state topic (Kafka cannot
delete one record; retention removes them). Each is published as an
``audit.admin_action`` event. Exit codes: 0 done, 1 error, 3 a redrive stopped itself
(canary failed, failure rate passed): the report says why and how to resume.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from streams.cli_dlq_common import (
    actor,
    build_filter,
    fail,
    filter_options,
    open_family,
    progress_bar,
    progress_option,
    scan,
)
from streams.errors import DlqError, StreamsError

EXIT_STOPPED = 3


def _rate(text: str | None) -> float | None:
    if text is None:
        return None
    raw = text.strip().lower().removesuffix("/s")
    try:
        value = float(raw)
    except ValueError:
        raise DlqError(f"bad --rate {text!r}: expected records per second, e.g. 200/s") from None
    if value <= 0:
        raise DlqError(f"bad --rate {text!r}: must be positive")
    return value


def _audit(opened: Any, who: str, action: str, subject: str, details: dict[str, Any]) -> None:
    from streams.dlq.audit import publish_admin_action

    try:
        publish_admin_action(
            opened.settings,
            opened.catalog,
            actor=who,
            action=action,
            subject=subject,
            details=details,
        )
    except Exception as exc:
        fail(f"the action was done but its audit event could not be published: {exc}")


def _print_report(body: dict[str, Any]) -> None:
    click.echo(
        f"redrive {body['redrive_id']} of {body['family']}: {body['state']}"
        + (f" — {body['outcome']}" if body["outcome"] else "")
    )
    verb = "would send" if body["dry_run"] else "sent"
    click.echo(f"  matched {body['matched']}, {verb} {body['sent']}, parked {body['parked']}")
    if body.get("sent_before"):
        click.echo(f"  sent by earlier runs of this redrive: {body['sent_before']}")
    for reason, count in body["skipped"].items():
        click.echo(f"  skipped {count} ({reason})")
    for title, name in (
        ("event type", "by_event_type"),
        ("fingerprint", "by_fingerprint"),
        ("tenant", "by_tenant"),
    ):
        if body[name]:
            click.echo(f"  by {title}: " + ", ".join(f"{k} {v}" for k, v in body[name].items()))
    if body["first"]:
        click.echo(f"  first {body['first']}  last {body['last']}")
    if not body["dry_run"] and (body["outcomes"]["done"] or body["outcomes"]["failed"]):
        o = body["outcomes"]
        click.echo(f"  outcomes seen: done {o['done']}, failed again {o['failed']}")


def register(dlq: click.Group) -> None:
    dlq.add_command(redrive_command)
    dlq.add_command(redrives_command)
    dlq.add_command(delete_command)
    dlq.add_command(purge_command)


@click.command("redrive")
@click.argument("family")
@filter_options
@click.option("--dry-run", is_flag=True, help="print what would be sent; send nothing")
@click.option("--rate", "rate_text", help="at most N records per second, e.g. 200/s")
@click.option(
    "--canary",
    type=click.IntRange(min=0),
    default=0,
    help="send N first, wait for their outcomes, stop if any fails again",
)
@click.option(
    "--max-failure-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="stop once this fraction of outcomes are renewed failures",
)
@click.option(
    "--max-replays",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="park a record already redriven this many times instead of sending it",
)
@click.option(
    "--outcome-timeout",
    "outcome_timeout_s",
    type=float,
    default=120.0,
    show_default=True,
    help="seconds to wait for the canary's outcomes",
)
@click.option("--resume", "resume_id", help="continue the redrive with this id")
@click.option(
    "--force",
    is_flag=True,
    help="resume even if the redrive's last checkpoint is recent (its process is known dead)",
)
@click.option("--actor", "actor_name", help="who is acting (default: cli:<user>)")
@click.option("--json", "as_json", is_flag=True, help="the report as one JSON object")
@progress_option
def redrive_command(
    family: str,
    dry_run: bool,
    rate_text: str | None,
    canary: int,
    max_failure_rate: float | None,
    max_replays: int,
    outcome_timeout_s: float,
    resume_id: str | None,
    force: bool,
    actor_name: str | None,
    as_json: bool,
    progress: bool | None,
    **kw: Any,
) -> None:
    """Send FAMILY's matching DLQ records through its main topic again (safely)."""
    from streams.dlq.redrive import Options, Redrive, new_redrive_id
    from streams.dlq.tenants import TenantLookup

    who = actor(actor_name)
    opened = None
    redrive_id = resume_id
    try:
        selection = build_filter(kw)
        if resume_id and selection.describe():
            raise DlqError("--resume takes no filters: the redrive keeps the ones it began with")
        options = Options(
            rate_per_s=_rate(rate_text),
            canary=canary,
            max_failure_rate=max_failure_rate,
            max_replays=max_replays,
            outcome_timeout_s=outcome_timeout_s,
        )
        opened = open_family(family)
        with opened.reader:
            total = sum(r.count for r in opened.reader.partitions())
        with progress_bar(progress, total, f"redrive {family}") as advance:
            seen = [0]

            def on_progress(done: int, _total: int) -> None:
                advance(max(0, done - seen[0]))
                seen[0] = max(seen[0], done)

            engine = Redrive(
                opened.settings,
                opened.catalog,
                family,
                tenants=TenantLookup(opened.store),
                on_progress=on_progress,
            )
            if dry_run:
                report = engine.plan(selection, options)
            elif resume_id:
                report = engine.resume(resume_id, force=force)
            else:
                redrive_id = new_redrive_id(int(time.time() * 1000))
                click.echo(
                    f"redrive {redrive_id} of {family} started "
                    f"(if interrupted: --resume {redrive_id})",
                    err=True,
                )
                sys.stderr.flush()
                report = engine.start(selection, options, actor=who, redrive_id=redrive_id)
    except StreamsError as exc:
        if opened is not None and redrive_id and not dry_run:  # a run that began and failed
            _audit(opened, who, "dlq.redrive", redrive_id, {"state": "failed", "outcome": str(exc)})
        fail(exc)
        return
    body = report.as_json()
    _audit(
        opened,
        who,
        "dlq.redrive.dry_run" if dry_run else "dlq.redrive",
        opened.topic if dry_run else report.redrive_id,
        {"filters": selection.describe(), "options": options.as_json(), **body},
    )
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        _print_report(body)
        if report.state == "stopped":
            click.echo(f"  resume: streams dlq redrive {family} --resume {report.redrive_id}")
    if report.state == "stopped":
        raise click.exceptions.Exit(EXIT_STOPPED)


@click.command("redrives")
@click.argument("family", required=False)
@click.option("--json", "as_json", is_flag=True)
def redrives_command(family: str | None, as_json: bool) -> None:
    """Redrives and their checkpoints (state, counts), newest last."""
    from streams.cli_dlq_common import settings
    from streams.dlq.kafka_io import CheckpointStore

    try:
        found = CheckpointStore(settings()).all()
    except StreamsError as exc:
        fail(exc)
        return
    found = sorted((c for c in found if family in (None, c.family)), key=lambda c: c.created_at_ms)
    if as_json:
        click.echo(json.dumps([json.loads(c.to_json()) for c in found], indent=2))
        return
    for c in found:
        click.echo(
            f"{c.redrive_id}  {c.family:<12} {c.state:<8} sent {c.counts.get('sent', 0):>7}"
            f"  {c.outcome}"
        )


@click.command("delete")
@click.argument("family")
@click.argument("positions", nargs=-1, required=True, metavar="PARTITION:OFFSET...")
@click.option("--note", default="", help="why (kept with the mark)")
@click.option("--actor", "actor_name")
def delete_command(
    family: str, positions: tuple[str, ...], note: str, actor_name: str | None
) -> None:
    """Mark these DLQ records resolved (hidden from list/stats, never redriven)."""
    from streams.dlq.kafka_io import StateStore
    from streams.dlq.records import parse_position

    who = actor(actor_name)
    try:
        opened = open_family(family, with_store=False)
        store = StateStore(opened.settings)
        marked = []
        with opened.reader:
            for text in positions:
                p, o = parse_position(text)
                record = opened.reader.get(p, o)  # only records that exist are marked
                marked.append(f"{opened.topic}/{record.partition}:{record.offset}")
        now_ms = int(time.time() * 1000)
        for source in marked:
            store.mark(source, "resolved", actor=who, at_ms=now_ms, note=note)
        store.flush()
    except StreamsError as exc:
        fail(exc)
        return
    _audit(
        opened,
        who,
        "dlq.delete",
        opened.topic,
        {"positions": list(positions), "count": len(marked), "note": note},
    )
    click.echo(
        f"marked {len(marked)} record{'s' if len(marked) != 1 else ''} of {opened.topic} resolved"
    )


@click.command("purge")
@click.argument("family")
@click.option("--older-than", required=True, help="failed longer ago than this, e.g. 7d")
@filter_options
@click.option("--dry-run", is_flag=True, help="count what would be marked")
@click.option("--note", default="")
@click.option("--actor", "actor_name")
@progress_option
def purge_command(
    family: str,
    older_than: str,
    dry_run: bool,
    note: str,
    actor_name: str | None,
    progress: bool | None,
    **kw: Any,
) -> None:
    """Mark every matching record older than --older-than resolved, in bulk."""
    from dataclasses import replace

    from streams.dlq.filters import parse_age_ms
    from streams.dlq.kafka_io import StateStore
    from streams.dlq.replay import source_of

    who = actor(actor_name)
    try:
        selection = build_filter(kw)
        now_ms = int(time.time() * 1000)
        cutoff = now_ms - parse_age_ms(older_than)
        until = cutoff if selection.until_ms is None else min(cutoff, selection.until_ms)
        selection = replace(selection, until_ms=until)
        opened = open_family(family)
        store = StateStore(opened.settings)
        count = 0
        with opened.reader:
            for record, _tenant, _state in scan(opened, selection, progress=progress):
                count += 1
                if not dry_run:
                    store.mark(source_of(record), "resolved", actor=who, at_ms=now_ms, note=note)
        store.flush()
    except StreamsError as exc:
        fail(exc)
        return
    if not dry_run:
        _audit(
            opened,
            who,
            "dlq.purge",
            opened.topic,
            {"filters": selection.describe(), "older_than": older_than, "count": count},
        )
    click.echo(
        f"{'would mark' if dry_run else 'marked'} {count} record{'s' if count != 1 else ''}"
        f" of {opened.topic} resolved (failed before the last {older_than})"
    )
