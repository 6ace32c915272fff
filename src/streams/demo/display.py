"""What ``streams up`` prints: the live progress table and the final summary (pure text)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from streams.dlq.records import DlqRecord


@dataclass
class FamilyView:
    """One family of the run: what was published and what became of it."""

    name: str
    published: int
    expected_dlq: int
    done: int = 0  # from the worker's metrics (since this run's baseline)
    dlq: int = 0  # from the worker's metrics
    retries: int = 0  # retried + deferred routings (metrics)
    retrying: int = 0  # records held in retry tiers now (metrics gauge)
    peer_done: int = 0  # this run's events the SMTP catcher / webhook receiver accepted
    dlq_seen: int = 0  # this run's events read back from the DLQ topic

    @property
    def settled(self) -> bool:
        return self.done + self.dlq >= self.published

    @property
    def adds_up(self) -> bool:
        return self.published == self.done + self.dlq


@dataclass
class RunView:
    families: list[FamilyView]
    elapsed_s: float
    dead_letters: list[tuple[str, DlqRecord]] = field(default_factory=list)


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def progress_lines(view: RunView) -> list[str]:
    """The live table (a few lines, redrawn in place on a terminal)."""
    head = (
        f"  {'family':<9} {'published':>9} {'done':>6} {'retrying':>9} {'in DLQ':>7}"
        f"   {view.elapsed_s:5.1f}s"
    )
    lines = [click.style(head, dim=True)]
    for f in view.families:
        mark = click.style(" ✓", fg="green") if f.settled else ""
        lines.append(f"  {f.name:<9} {f.published:>9} {f.done:>6} {f.retrying:>9} {f.dlq:>7}{mark}")
    return lines


def progress_line(view: RunView) -> str:
    """The same on one line (for logs and pipes, printed when something changed)."""
    parts = [
        f"{f.name} {f.done}/{f.published} done, {f.retrying} retrying, {f.dlq} in DLQ"
        for f in view.families
    ]
    return f"  [{view.elapsed_s:5.1f}s] " + " | ".join(parts)


@dataclass
class WhereToLook:
    metrics_url: str
    health_url: str
    bootstrap: str
    dlq_topics: dict[str, str]  # family -> topic
    smtp_log: Path
    webhook_log: Path
    worker_log: Path
    broker_log: Path | None
    smtp_address: str
    webhook_url: str
    mail_count: int = 0


def summary_lines(
    view: RunView,
    *,
    settled: bool,
    problems: Sequence[str],
    where: WhereToLook,
    notes: Sequence[str] = (),
) -> list[str]:
    published = sum(f.published for f in view.families)
    done = sum(f.done for f in view.families)
    dlq = sum(f.dlq for f in view.families)
    retries = sum(f.retries for f in view.families)
    lines: list[str] = [""]
    if settled:
        title = (
            f"settled in {view.elapsed_s:.1f}s: {_plural(published, 'event')} published, "
            f"{done} done, {dlq} in the DLQ ({_plural(retries, 'retry')} on the way)"
        )
        lines.append(click.style(title, bold=True))
    else:
        lines.append(
            click.style(
                f"NOT settled after {view.elapsed_s:.1f}s: {published} published, {done} done, "
                f"{dlq} in the DLQ",
                fg="red",
                bold=True,
            )
        )
    lines.append("")
    lines.append(
        f"  {'family':<9} {'published':>9} {'done':>6} {'in DLQ':>7} {'retries':>8}   check"
    )
    for f in view.families:
        lines.append(_row(f.name, f.published, f.done, f.dlq, f.retries))
    lines.append(_row("total", published, done, dlq, retries))
    if notes:
        lines.append("")
        lines.extend(f"  note: {n}" for n in notes)
    if problems:
        lines.append("")
        lines.append(click.style("  problems:", fg="red", bold=True))
        lines.extend(f"    - {p}" for p in problems)
    if view.dead_letters:
        lines.append("")
        lines.append("  dead letters of this run (streams dlq show <family> <position>):")
        fam_w = max(len(fam) for fam, _ in view.dead_letters)
        pos_w = max(len(r.position) for _, r in view.dead_letters)
        for family, record in sorted(
            view.dead_letters, key=lambda fr: (fr[0], fr[1].reason, fr[1].position)
        ):
            attempt = (
                f" (attempt {record.attempt})" if record.attempt and record.attempt > 1 else ""
            )
            message = " ".join(record.error_message.split())
            if len(message) > 110:
                message = message[:107] + "..."
            lines.append(
                f"    {family:<{fam_w}}  {record.position:<{pos_w}}  {record.reason:<9}  "
                f"{message}{attempt}"
            )
    lines.append("")
    lines.extend(where_lines(where, view))
    return lines


def _row(name: str, published: int, done: int, dlq: int, retries: int) -> str:
    ok = published == done + dlq
    check = f"{published} = {done} + {dlq}" if ok else f"{published} != {done} + {dlq}"
    mark = click.style("ok", fg="green") if ok else click.style("MISMATCH", fg="red", bold=True)
    return f"  {name:<9} {published:>9} {done:>6} {dlq:>7} {retries:>8}   {check}  {mark}"


def where_lines(where: WhereToLook, view: RunView | None = None) -> list[str]:
    some_family = "webhook" if "webhook" in where.dlq_topics else next(iter(where.dlq_topics))
    example = ""
    if view is not None:
        for family, record in view.dead_letters:
            if family == some_family:
                example = f"streams dlq show {family} {record.position}"
                break
    dlq_topic = where.dlq_topics[some_family]
    boot = shlex.quote(where.bootstrap)
    lines = [
        "  where to look",
        f"    metrics    {where.metrics_url}   (streams_events_total, streams_dead_letters_total)",
        f"    health     {where.health_url}",
        f"    DLQ        streams dlq list {some_family}   ·   "
        + (f"{example}   ·   " if example else "")
        + f"streams dlq stats {some_family}",
        f"    raw topic  kcat -b {boot} -C -t {dlq_topic} -o beginning -e "
        "-f 'partition %p offset %o\\n%h\\n\\n'",
        f"               kafka-console-consumer.sh --bootstrap-server {boot} --topic {dlq_topic} "
        "--from-beginning --property print.headers=true --property print.offset=true",
        f"    mail       {where.smtp_log}   (SMTP catcher on {where.smtp_address})",
        f"    webhooks   {where.webhook_log}   (receiver {where.webhook_url})",
        f"    logs       worker {where.worker_log}"
        + (f"\n               broker {where.broker_log}" if where.broker_log else ""),
    ]
    return lines
