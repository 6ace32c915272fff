"""``streams schedules list|next|trigger NAME|pause NAME|resume NAME``.

``list`` shows each schedule with its state read from Kafka (last tick, paused, which
worker fired it); ``next`` the coming ticks in the schedule's zone and UTC; ``trigger``
publishes the schedule's event now (id ``schedule:<name>:manual:<ms>``; works for a
disabled, manual-only schedule); ``pause``/``resume`` write or tombstone ``pause/<name>``
in the state topic, which the leader reads within a fraction of a second. Operator actions
(trigger, pause, resume) publish an ``audit.admin_action`` event. Exit code 1 on errors.
"""

from __future__ import annotations

import getpass
import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from streams.errors import StreamsError


def _fail(exc: StreamsError | str) -> Any:
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(1)


def _load() -> tuple[Any, list[Any]]:
    from streams.schedules.config import ScheduleSettings, load_schedules
    from streams.settings import Settings

    return Settings(), load_schedules(ScheduleSettings().schedules_path)


def _fmt(ms: int | None, zone: Any = UTC) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).isoformat(timespec="seconds")


def _audit(settings: Any, action: str, name: str, outcome: str) -> None:
    from streams.publish.publisher import Publisher

    with Publisher(settings, producer_name="streams.cli") as pub:
        pub.publish(
            "audit.admin_action",
            {
                "subject_id": f"schedule/{name}",
                "actor_id": getpass.getuser() or "unknown",
                "action": action,
                "details": {"outcome": outcome},
            },
        )


@click.group("schedules")
def schedules() -> None:
    """Cron schedules fired by the leader worker (schedules.yaml)."""


@schedules.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Every schedule, its state in Kafka and its next tick."""
    from streams.schedules.plan import next_ticks
    from streams.schedules.state import read_state

    try:
        settings, items = _load()
        state = read_state(settings)
    except StreamsError as exc:
        _fail(exc)
    now = int(time.time() * 1000)
    rows = []
    for s in items:
        nxt = next_ticks(s.cron, s.zone, now, 1)
        rows.append(
            {
                "name": s.name,
                "cron": s.cron,
                "timezone": s.timezone,
                "event_type": s.event_type,
                "catch_up": s.catch_up,
                "enabled": s.enabled,
                "paused": s.name in state.paused,
                "last_tick": _fmt(state.cursors.get(s.name), s.zone),
                "fired_by": state.fired_by.get(s.name, "-"),
                "next_tick": _fmt(nxt[0] if nxt else None, s.zone),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        flags = ("" if r["enabled"] else " disabled") + (" PAUSED" if r["paused"] else "")
        click.echo(
            f"{r['name']:<26} {r['cron']:<14} {r['timezone']:<16} next {r['next_tick']}"
            f"  last {r['last_tick']} ({r['fired_by']}){flags}"
        )


@schedules.command("next")
@click.argument("name", required=False)
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(1, 1000))
def next_(name: str | None, count: int) -> None:
    """The next COUNT ticks of NAME (default: of every schedule)."""
    from streams.schedules.config import find
    from streams.schedules.plan import next_ticks

    try:
        _, items = _load()
        chosen = [find(items, name)] if name else items
    except StreamsError as exc:
        _fail(exc)
    now = int(time.time() * 1000)
    for s in chosen:
        click.echo(f"{s.name} ({s.cron}, {s.timezone}):")
        for t in next_ticks(s.cron, s.zone, now, count):
            click.echo(f"  {_fmt(t, s.zone)}  ({_fmt(t)})")


@schedules.command("trigger")
@click.argument("name")
def trigger(name: str) -> None:
    """Publish NAME's event now (a manual run; the schedule's cursor is not moved)."""
    from streams.publish.publisher import Publisher
    from streams.schedules.config import find

    try:
        settings, items = _load()
        s = find(items, name)
        now = int(time.time() * 1000)
        with Publisher(settings, producer_name="streams.cli") as pub:
            res = pub.publish(
                s.event_type, s.payload_for(now), event_id=f"schedule:{s.name}:manual:{now}"
            )
        _audit(settings, "schedule.trigger", name, "published")
    except StreamsError as exc:
        _fail(exc)
    click.echo(f"triggered {name}: {s.event_type} {res.event_id}")


def _pause(name: str, paused: bool) -> None:
    from streams.schedules.config import find
    from streams.schedules.state import write

    try:
        settings, items = _load()
        find(items, name)
        value = json.dumps({"actor": getpass.getuser(), "at_ms": int(time.time() * 1000)})
        write(settings, f"pause/{name}".encode(), value.encode() if paused else None)
        _audit(settings, "schedule.pause" if paused else "schedule.resume", name, "done")
    except (StreamsError, RuntimeError) as exc:
        _fail(str(exc))
    click.echo(f"{'paused' if paused else 'resumed'} {name}")


@schedules.command("pause")
@click.argument("name")
def pause(name: str) -> None:
    """Stop firing NAME (its ticks while paused are passed over, not caught up)."""
    _pause(name, True)


@schedules.command("resume")
@click.argument("name")
def resume(name: str) -> None:
    """Fire NAME again."""
    _pause(name, False)
