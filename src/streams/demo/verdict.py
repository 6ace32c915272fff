"""What the demo's counts mean: the view of a run, when it has settled, what went wrong.

Pure: no IO. The supervisor (``runner.py``) gathers the counts (the worker's metrics since
the run's baseline, the event ids the SMTP catcher and the webhook receiver accepted, the
run's records read back from the DLQ topics) and asks this module. A run is judged twice
over: by the worker's metrics (``done + dlq == published`` per family) and by what really
arrived (every event at the peer or in the DLQ topic, with the DLQ reason its scenario
expects).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import TYPE_CHECKING

from streams.demo import metrics as m
from streams.demo.display import FamilyView, RunView
from streams.demo.scenario import Scenario

if TYPE_CHECKING:
    from streams.dlq.records import DlqRecord

# event id -> (family, its record in the DLQ topic), for this run's events only
DeadLetters = Mapping[str, tuple[str, "DlqRecord"]]


def run_view(
    scenario: Scenario,
    counts: m.Snapshot,
    peers: Mapping[str, Set[str]],
    dead: DeadLetters,
    elapsed_s: float,
) -> RunView:
    """One row per family: published and expected (scenario), metric counts (``counts``,
    since the baseline), this run's events at its peer (``peers``: family -> event ids)
    and in the DLQ topic (``dead``)."""
    published = scenario.published()
    expected = scenario.expected_dlq()
    families = []
    for name in scenario.families:
        c = counts.get(name, m.FamilyCounts())
        ids = {e.event_id for e in scenario.events if e.family == name}
        families.append(
            FamilyView(
                name=name,
                published=published[name],
                expected_dlq=expected[name],
                done=int(c.done),
                dlq=int(c.dead_lettered),
                retries=int(c.retried + c.deferred),
                retrying=int(c.waiting),
                peer_done=len(ids & peers.get(name, set())),
                dlq_seen=sum(1 for fam, _ in dead.values() if fam == name),
            )
        )
    return RunView(families=families, elapsed_s=elapsed_s, dead_letters=list(dead.values()))


def settled(view: RunView) -> bool:
    """Every event of the run reached a peer or the DLQ, and the metrics caught up."""
    return all(f.settled and f.peer_done + f.dlq_seen >= f.published for f in view.families)


def problems(
    scenario: Scenario,
    view: RunView,
    dead: DeadLetters,
    peer_ids: Set[str],
    is_settled: bool,
) -> list[str]:
    """Each way the run disagrees with its scenario, as a sentence (none: it passed).

    ``peer_ids``: every event id a peer accepted. Metric surpluses are no problem when the
    run's own events are exactly accounted for (see ``count_leftovers``)."""
    found: list[str] = []
    for f in view.families:
        own_exact = f.peer_done + f.dlq_seen == f.published
        if f.done + f.dlq > f.published and own_exact and is_settled:
            continue  # events of an earlier run finished too: a note, see count_leftovers
        if not f.adds_up:
            extra = (
                " (the worker also finished events not published by this run: left over "
                "from an earlier run with the same app id?)"
                if f.done + f.dlq > f.published
                else ""
            )
            found.append(
                f"{f.name}: the metrics count {f.done} done + {f.dlq} in the DLQ = "
                f"{f.done + f.dlq}, but {f.published} were published{extra}"
            )
        if f.dlq_seen != f.expected_dlq and is_settled:
            found.append(
                f"{f.name}: {f.dlq_seen} of this run's events are in the DLQ topic, "
                f"{f.expected_dlq} expected"
            )
    for event in scenario.events:
        if event.event_id in dead:
            _, record = dead[event.event_id]
            actual = f"DLQ ({record.reason}: {record.error_message})"
            ok = event.expect == "dlq" and record.reason == event.expect_reason
        elif event.event_id in peer_ids:
            actual, ok = "done", event.expect == "done"
        else:
            actual, ok = "still pending", False
        if not ok:
            want = "done" if event.expect == "done" else f"DLQ ({event.expect_reason})"
            label = f" [{event.note}]" if event.note else ""
            found.append(f"{event.family} {event.event_id}{label}: expected {want}, got {actual}")
    return found


def count_leftovers(view: RunView) -> list[str]:
    """Families whose metrics counted more than this run published while every event of
    the run is accounted for (at a peer or in the DLQ): the surplus are events an earlier,
    interrupted run left in the retry tiers. Their rows switch to this run's own counts."""
    notes = []
    for f in view.families:
        surplus = f.done + f.dlq - f.published
        if surplus > 0 and f.peer_done + f.dlq_seen == f.published:
            notes.append(
                f"{f.name}: the worker also finished {surplus} event"
                f"{'s' if surplus != 1 else ''} left in the retry tiers by an earlier run "
                f"(metrics: {f.done} done, {f.dlq} in the DLQ); the row counts this run only"
            )
            f.done, f.dlq = f.peer_done, f.dlq_seen
    return notes


def exit_code(is_settled: bool, found: list[str]) -> int:
    """0 when the run settled with no problem, else 1."""
    return 0 if is_settled and not found else 1


def changes(delta: m.Snapshot) -> list[str]:
    """What moved between two readings while serving ("email +2 done", ...)."""
    out = []
    for family, counts in delta.items():
        for label, value in (
            ("done", counts.done),
            ("retried", counts.retried),
            ("in DLQ", counts.dead_lettered),
        ):
            if value:
                out.append(f"{family} +{int(value)} {label}")
    return out
