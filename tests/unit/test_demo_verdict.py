"""The demo's verdict from counts: the run view, settled, problems, leftovers, exit code."""

from __future__ import annotations

from streams.core import headers as h
from streams.demo import verdict as v
from streams.demo.display import RunView
from streams.demo.metrics import FamilyCounts
from streams.demo.scenario import DemoEvent, Scenario
from streams.dlq.records import DlqRecord


def _event(family: str, n: int, expect: str = "done", reason: str | None = None) -> DemoEvent:
    return DemoEvent(
        family=family,
        event_type=f"{family}.requested",
        event_id=f"demo-r1-{family}-{n}",
        payload={},
        expect="dlq" if expect == "dlq" else "done",
        expect_reason=reason,
        note="bounces" if expect == "dlq" else "",
    )


# email: 3 events, the third bound for the DLQ (permanent); webhook: 2 events, both done
SCENARIO = Scenario(
    "r1",
    [
        _event("email", 1),
        _event("email", 2),
        _event("email", 3, "dlq", "permanent"),
        _event("webhook", 1),
        _event("webhook", 2),
    ],
)
EMAIL_DONE = {"demo-r1-email-1", "demo-r1-email-2"}
WEBHOOK_DONE = {"demo-r1-webhook-1", "demo-r1-webhook-2"}


def _record(reason: str, message: str = "550 no such user") -> DlqRecord:
    return DlqRecord(
        topic="email.dlq",
        partition=0,
        offset=0,
        timestamp_ms=None,
        key=None,
        value=None,
        headers={h.DLQ_REASON: reason, h.ERROR_MESSAGE: message},
    )


def _dead(reason: str = "permanent") -> dict[str, tuple[str, DlqRecord]]:
    return {"demo-r1-email-3": ("email", _record(reason))}


def _finished_view(
    email: FamilyCounts | None = None, webhook: FamilyCounts | None = None
) -> RunView:
    counts = {
        "email": email or FamilyCounts(done=2, dead_lettered=1, retried=2, deferred=1),
        "webhook": webhook or FamilyCounts(done=2),
    }
    peers = {"email": EMAIL_DONE | {"someone-else"}, "webhook": WEBHOOK_DONE}
    return v.run_view(SCENARIO, counts, peers, _dead(), elapsed_s=4.5)


def test_the_view_counts_metrics_and_only_this_runs_events_at_the_peers() -> None:
    view = _finished_view()
    email, webhook = view.families
    assert (email.name, email.published, email.expected_dlq) == ("email", 3, 1)
    assert (email.done, email.dlq, email.retries) == (2, 1, 3)
    assert (email.peer_done, email.dlq_seen) == (2, 1)  # "someone-else" is not ours
    assert (webhook.published, webhook.expected_dlq, webhook.peer_done) == (2, 0, 2)
    assert view.elapsed_s == 4.5 and len(view.dead_letters) == 1


def test_a_family_without_metrics_yet_counts_zero() -> None:
    view = v.run_view(SCENARIO, {}, {}, {}, elapsed_s=0.1)
    assert [(f.done, f.dlq, f.peer_done) for f in view.families] == [(0, 0, 0), (0, 0, 0)]
    assert not v.settled(view)


def test_a_finished_run_settles_with_no_problem_and_exits_zero() -> None:
    view = _finished_view()
    assert v.settled(view)
    found = v.problems(SCENARIO, view, _dead(), EMAIL_DONE | WEBHOOK_DONE, True)
    assert found == []
    assert v.exit_code(True, found) == 0


def test_metrics_alone_do_not_settle_a_run_whose_events_have_not_all_arrived() -> None:
    peers = {"email": EMAIL_DONE, "webhook": {"demo-r1-webhook-1"}}
    counts = {"email": FamilyCounts(done=2, dead_lettered=1), "webhook": FamilyCounts(done=2)}
    view = v.run_view(SCENARIO, counts, peers, _dead(), elapsed_s=1.0)
    assert not v.settled(view)
    found = v.problems(SCENARIO, view, _dead(), EMAIL_DONE | {"demo-r1-webhook-1"}, False)
    assert found == ["webhook demo-r1-webhook-2: expected done, got still pending"]
    assert v.exit_code(False, found) == 1


def test_a_wrong_dlq_reason_and_a_short_count_are_problems() -> None:
    dead = {"demo-r1-email-3": ("email", _record("exhausted", "timed out"))}
    counts = {"email": FamilyCounts(done=1, dead_lettered=1), "webhook": FamilyCounts(done=2)}
    peers = {"email": {"demo-r1-email-1"}, "webhook": WEBHOOK_DONE}
    view = v.run_view(SCENARIO, counts, peers, dead, elapsed_s=60.0)
    found = v.problems(SCENARIO, view, dead, {"demo-r1-email-1"} | WEBHOOK_DONE, False)
    assert found == [
        "email: the metrics count 1 done + 1 in the DLQ = 2, but 3 were published",
        "email demo-r1-email-2: expected done, got still pending",
        "email demo-r1-email-3 [bounces]: expected DLQ (permanent), got DLQ (exhausted: timed out)",
    ]


def test_an_unexpected_dlq_count_is_a_problem_once_settled() -> None:
    view = _finished_view()
    view.families[0].expected_dlq = 2
    found = v.problems(SCENARIO, view, _dead(), EMAIL_DONE | WEBHOOK_DONE, True)
    assert found == ["email: 1 of this run's events are in the DLQ topic, 2 expected"]


def test_leftovers_of_an_earlier_run_are_a_note_and_the_row_counts_this_run() -> None:
    view = _finished_view(email=FamilyCounts(done=4, dead_lettered=1))
    assert v.settled(view)
    assert v.problems(SCENARIO, view, _dead(), EMAIL_DONE | WEBHOOK_DONE, True) == []
    notes = v.count_leftovers(view)
    assert notes == [
        "email: the worker also finished 2 events left in the retry tiers by an earlier run "
        "(metrics: 4 done, 1 in the DLQ); the row counts this run only"
    ]
    assert (view.families[0].done, view.families[0].dlq) == (2, 1)
    assert v.count_leftovers(view) == []  # the row now adds up


def test_a_surplus_while_this_runs_events_are_missing_is_a_problem() -> None:
    counts = {"email": FamilyCounts(done=5, dead_lettered=1), "webhook": FamilyCounts(done=2)}
    peers = {"email": {"demo-r1-email-1"}, "webhook": WEBHOOK_DONE}
    view = v.run_view(SCENARIO, counts, peers, _dead(), elapsed_s=60.0)
    found = v.problems(SCENARIO, view, _dead(), {"demo-r1-email-1"} | WEBHOOK_DONE, False)
    assert found[0].startswith("email: the metrics count 5 done + 1 in the DLQ = 6, but 3")
    assert "left over from an earlier run with the same app id?" in found[0]
    assert v.count_leftovers(view) == []


def test_changes_name_what_moved() -> None:
    delta = {
        "email": FamilyCounts(done=2, retried=1),
        "webhook": FamilyCounts(dead_lettered=1, deferred=3),
    }
    assert v.changes(delta) == ["email +2 done", "email +1 retried", "webhook +1 in DLQ"]
    assert v.changes({"email": FamilyCounts()}) == []
