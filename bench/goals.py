"""The goals of issue 17 judged from one run's results (the JSON ``bench.harness`` writes).

Every goal reads one figure of one case over the run's rounds and compares its median with a
limit: P1's drain rate and its ratio to F0 (the bare faust agent of the same run), P3's p50
and p99 latency (at half of P1's rate), P7's worker RSS with 1M idempotency keys written in
large batches and as a trickle of tiny ones, P9's SDK rate as a share of raw produce. A ratio
between two cases is the ratio of their medians, as in the harness's table; its min and max
pair the rounds (both cases run once per round, interleaved). A goal whose case is missing
from the run, or has no sample, is "no data", never "met".

Pure functions over the results dict: ``python -m bench plot`` prints the same table for an
old results file as ``python -m bench`` does for a new one.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MET = "met"
NOT_MET = "NOT MET"
NO_DATA = "no data"


@dataclass(frozen=True)
class Goal:
    """``source``: "value" (the case's headline), "detail:<name>" or "ratio:<case id>"."""

    case: str
    tag: str  # short name for the picture: "P1 rate"
    what: str
    source: str
    op: str  # ">=" or "<="
    limit: float
    unit: str
    fmt: str = ",.0f"

    @property
    def target(self) -> str:
        return f"{self.op} {self.limit:{self.fmt}} {self.unit}"

    def holds(self, measured: float) -> bool:
        return measured >= self.limit if self.op == ">=" else measured <= self.limit


GOALS: tuple[Goal, ...] = (
    Goal("P1", "P1 rate", "worker drain rate", "value", ">=", 15_000, "events/s"),
    Goal("P1", "P1/F0", "worker / bare faust agent", "ratio:F0", ">=", 1.2, "x F0", ".2f"),
    Goal("P3", "P3 p50", "end-to-end latency p50", "detail:p50_ms", "<=", 10, "ms", ",.1f"),
    Goal("P3", "P3 p99", "end-to-end latency p99", "detail:p99_ms", "<=", 50, "ms", ",.1f"),
    Goal("P7", "P7 batched", "RSS, 1M keys in big batches", "detail:big_rss_mb", "<=", 300, "MB"),
    Goal("P7", "P7 trickle", "RSS, 1M keys as a trickle", "detail:small_rss_mb", "<=", 300, "MB"),
    Goal("P9", "P9 SDK/raw", "SDK / raw produce", "detail:ratio_to_raw", ">=", 0.5, "x raw", ".2f"),
)
# The cases the goals read, and the references every ratio is shown against.
HEADLINE: tuple[str, ...] = ("P0", "F0", "P1", "P3", "P7", "P9")


@dataclass(frozen=True)
class Verdict:
    goal: Goal
    status: str  # MET, NOT_MET or NO_DATA
    median: float | None = None
    low: float | None = None
    high: float | None = None
    rounds: int = 0
    note: str = ""


def cases_by_id(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c["id"]): c for c in document.get("cases", [])}


def figures(case: Mapping[str, Any] | None, name: str = "value") -> list[float]:
    """The per-round figures of a case: its values, or ``detail:<name>`` of its details."""
    if case is None:
        return []
    samples = case.get("samples") or []
    if name == "value":
        return [float(s["value"]) for s in samples]
    key = name.removeprefix("detail:")
    return [float(s["details"][key]) for s in samples if key in s.get("details", {})]


def ratio_figures(
    numerator: Sequence[float], denominator: Sequence[float]
) -> tuple[float, float, float] | None:
    """(median ratio, min, max): medians divided; min/max over rounds paired by position
    (or the widest bounds when a round of one of them failed)."""
    if not numerator or not denominator or min(denominator) <= 0:
        return None
    median = statistics.median(numerator) / statistics.median(denominator)
    if len(numerator) == len(denominator):
        paired = [n / d for n, d in zip(numerator, denominator, strict=True)]
        return median, min(paired), max(paired)
    return median, min(numerator) / max(denominator), max(numerator) / min(denominator)


def judge(goal: Goal, cases: Mapping[str, Mapping[str, Any]]) -> Verdict:
    case = cases.get(goal.case)
    values = figures(case, "value")
    if goal.source.startswith("ratio:"):
        other = figures(cases.get(goal.source.removeprefix("ratio:")), "value")
        found = ratio_figures(values, other)
        rounds = min(len(values), len(other))
    else:
        chosen = figures(case, goal.source)
        found = (statistics.median(chosen), min(chosen), max(chosen)) if chosen else None
        rounds = len(chosen)
    if found is None:
        why = "not in this run" if case is None else "no sample (see errors)"
        if case is not None and goal.source.startswith("ratio:"):
            why = f"needs {goal.source.removeprefix('ratio:')} in the same run"
        return Verdict(goal, NO_DATA, note=why)
    median, low, high = found
    status = MET if goal.holds(median) else NOT_MET
    return Verdict(goal, status, median, low, high, rounds, _context(goal, case))


def _context(goal: Goal, case: Mapping[str, Any] | None) -> str:
    """Conditions of the measurement that a reader of the verdict needs."""
    if goal.case == "P3":
        rates = figures(case, "detail:rate_target")
        from_p1 = figures(case, "detail:rate_from_p1")
        if rates:
            where = "half of P1, this run" if from_p1 and min(from_p1) == 1 else "NOT this run's P1"
            return f"at {statistics.median(rates):,.0f} events/s ({where})"
    if goal.source == "detail:big_rss_mb":
        return "batches of 1,000 hashes"
    if goal.source == "detail:small_rss_mb":
        batch = figures(case, "detail:small_batch")
        if batch:
            return f"batches of {batch[0]:.0f} hashes"
    return ""


def verdicts(document: Mapping[str, Any], goals: Sequence[Goal] = GOALS) -> list[Verdict]:
    cases = cases_by_id(document)
    return [judge(goal, cases) for goal in goals]


def render(rows: Sequence[Verdict]) -> str:
    """A fixed-width table: one row per goal."""

    def num(value: float | None, goal: Goal) -> str:
        return "-" if value is None else f"{value:{goal.fmt}}"

    table = [("case", "goal", "median", "min", "max", "rounds", "target", "verdict", "note")]
    for v in rows:
        g = v.goal
        table.append(
            (
                g.case,
                g.what,
                num(v.median, g),
                num(v.low, g),
                num(v.high, g),
                str(v.rounds) if v.rounds else "-",
                g.target,
                v.status,
                v.note,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    met = sum(v.status == MET for v in rows)
    judged = sum(v.status != NO_DATA for v in rows)
    lines.append(f"{met} of {judged} goals with data met ({len(rows) - judged} without data)")
    return "\n".join(lines)
