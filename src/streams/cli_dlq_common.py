"""What the ``streams dlq`` commands share: opening a family, the filter options, the scan.

The filter options are one decorator so list, export, stats and redrive accept the same
criteria (``streams.dlq.filters.DlqFilter``); ``scan`` yields the selected records one at
a time with their tenant and resolved-state, showing a rich progress bar on stderr for
long reads.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click
from pydantic import ValidationError

from streams.core.headers import DLQ_REASONS
from streams.errors import ConfigError, StreamsError
from streams.settings import Settings

F = Callable[..., Any]


def fail(exc: StreamsError | str) -> Any:
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(1)


def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid STREAMS_* settings: {exc}") from None


def schema_store(s: Settings) -> Any:
    from streams.serde import SchemaStore

    try:
        return SchemaStore.load(s.schemas_dir)
    except StreamsError:
        return None  # values are then shown as hex, marked undecodable


def actor(explicit: str | None) -> str:
    if explicit:
        return explicit
    with contextlib.suppress(Exception):
        return f"cli:{getpass.getuser()}"
    return f"cli:{os.environ.get('USER', 'unknown')}"


def filter_options(f: F) -> F:
    """The selection criteria shared by list, export, stats and redrive."""
    options = [
        click.option(
            "--reason",
            "reasons",
            multiple=True,
            type=click.Choice(DLQ_REASONS, case_sensitive=False),
            help="dead-lettered for this reason (repeatable)",
        ),
        click.option(
            "--error-class",
            "error_classes",
            multiple=True,
            help="error class, full or last part (repeatable)",
        ),
        click.option(
            "--fingerprint",
            "fingerprints",
            multiple=True,
            help="error fingerprint as `stats` prints it (repeatable)",
        ),
        click.option("--event-type", "event_types", multiple=True, help="(repeatable)"),
        click.option(
            "--tenant",
            "tenants",
            multiple=True,
            help="envelope tenant_id (decodes values; repeatable)",
        ),
        click.option("--key", "keys", multiple=True, help="record key as text (repeatable)"),
        click.option("--since", help="failed at or after: ISO 8601, epoch ms, or an age (2h)"),
        click.option("--until", help="failed before: ISO 8601, epoch ms, or an age (30m)"),
        click.option("--min-attempt", type=click.IntRange(min=1)),
        click.option("--max-attempt", type=click.IntRange(min=1)),
        click.option("--grep", "text", help="text in the error message (any case)"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def build_filter(kw: dict[str, Any]) -> Any:
    """A DlqFilter from the options of ``filter_options`` (popped from ``kw``)."""
    from streams.dlq.filters import DlqFilter, parse_time_ms

    now_ms = int(time.time() * 1000)
    since, until = kw.pop("since", None), kw.pop("until", None)
    return DlqFilter.build(
        reasons=kw.pop("reasons", ()),
        error_classes=kw.pop("error_classes", ()),
        fingerprints=kw.pop("fingerprints", ()),
        event_types=kw.pop("event_types", ()),
        tenants=kw.pop("tenants", ()),
        keys=kw.pop("keys", ()),
        since_ms=parse_time_ms(since, now_ms) if since else None,
        until_ms=parse_time_ms(until, now_ms) if until else None,
        min_attempt=kw.pop("min_attempt", None),
        max_attempt=kw.pop("max_attempt", None),
        text=kw.pop("text", None),
    )


@dataclass
class Opened:
    settings: Settings
    catalog: Any
    topic: str
    reader: Any
    store: Any


def open_family(family: str, *, with_store: bool = True) -> Opened:
    from streams.catalog import load_catalog
    from streams.dlq.reader import DlqReader
    from streams.dlq.records import dlq_topic_for

    s = settings()
    catalog = load_catalog(s.catalog_path)
    topic = dlq_topic_for(s, catalog, family)
    return Opened(s, catalog, topic, DlqReader(s, topic), schema_store(s) if with_store else None)


def progress_option(f: F) -> F:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )(f)


@contextlib.contextmanager
def progress_bar(enabled: bool | None, total: int, what: str) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; a rich bar on stderr when enabled (or stderr is a tty)."""
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show or total <= 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.update(task, advance=n)


def scan(
    opened: Opened,
    selection: Any,
    *,
    include_resolved: bool = False,
    want_tenant: bool = False,
    progress: bool | None = None,
    hidden: list[int] | None = None,
) -> Iterator[tuple[Any, str | None, str | None]]:
    """(record, tenant, state) of every selected record, streamed, with a progress bar."""
    from streams.dlq.selection import select

    total = sum(r.count for r in opened.reader.partitions())
    with progress_bar(progress, total, f"reading {opened.topic}") as advance:
        yield from select(
            opened.settings,
            opened.reader,
            opened.store,
            selection,
            include_resolved=include_resolved,
            want_tenant=want_tenant,
            on_read=advance,
            hidden=hidden,
        )
