"""The worker's ``/metrics`` as per-family counts, and differences between two readings."""

from __future__ import annotations

import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class FamilyCounts:
    """One family's counters (cumulative) and gauges (current) from one reading."""

    done: float = 0.0
    dead_lettered: float = 0.0
    retried: float = 0.0
    deferred: float = 0.0
    duplicate: float = 0.0
    waiting: float = 0.0  # gauge: retry-tier records held until due
    in_flight: float = 0.0  # gauge
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    retries_by_tier: Counter[str] = field(default_factory=Counter)

    def minus(self, base: FamilyCounts) -> FamilyCounts:
        """Counters since ``base``; gauges as they are now."""
        return FamilyCounts(
            done=self.done - base.done,
            dead_lettered=self.dead_lettered - base.dead_lettered,
            retried=self.retried - base.retried,
            deferred=self.deferred - base.deferred,
            duplicate=self.duplicate - base.duplicate,
            waiting=self.waiting,
            in_flight=self.in_flight,
            dlq_reasons=self.dlq_reasons - base.dlq_reasons,
            retries_by_tier=self.retries_by_tier - base.retries_by_tier,
        )


Snapshot = dict[str, FamilyCounts]

_OUTCOMES = {"done", "dead_lettered", "retried", "deferred", "duplicate"}


def parse(text: str) -> Snapshot:
    """Per-family counts from Prometheus text exposition."""
    out: Snapshot = {}

    def fam(name: str) -> FamilyCounts:
        return out.setdefault(name, FamilyCounts())

    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            labels = sample.labels
            family = labels.get("family")
            if family is None:
                continue
            name, value = sample.name, float(sample.value)
            if name == "streams_events_total":
                outcome = labels.get("outcome", "")
                if outcome in _OUTCOMES:
                    setattr(fam(family), outcome, value)
            elif name == "streams_dead_letters_total":
                reasons = fam(family).dlq_reasons
                reasons[labels.get("reason", "?")] = int(reasons[labels.get("reason", "?")] + value)
            elif name == "streams_retries_total":
                tiers = fam(family).retries_by_tier
                tiers[labels.get("tier", "?")] = int(tiers[labels.get("tier", "?")] + value)
            elif name == "streams_waiting":
                fam(family).waiting = value
            elif name == "streams_in_flight":
                fam(family).in_flight = value
    return out


def scrape(url: str, timeout_s: float = 2.0) -> Snapshot:
    """GET ``url`` (the worker's /metrics) and parse it; OSError when it does not answer."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse(response.read().decode("utf-8", errors="replace"))


def delta(now: Snapshot, base: Snapshot) -> Snapshot:
    return {name: counts.minus(base.get(name, FamilyCounts())) for name, counts in now.items()}
