"""Hourly and daily statistics by family and event type, from status records (seed 002's
queue metrics). Pure: the caller feeds the records of ``streams.status`` in log order.

A status record (CONTRACTS.md) is one JSON object per lifecycle transition of an event:
``{event_id, family, event_type, state, attempt, at_ms, ...}``. From the sequence of one
event's records:

- **completed**: ``done`` records; **throughput** is completed per minute of the window;
- **retries**: ``retrying`` records (a failed attempt that will run again);
- **dead_lettered**: ``dead_lettered`` records; **failures** = retries + dead_lettered
  (every failed attempt); **cancelled** and **deferred** are counted as they come;
- **wait**: from the event's acceptance (its ``accepted`` record, or ``published_at_ms``:
  the worker puts the first attempt's record timestamp there) to its first start;
- **processing**: from an attempt's start to the record that ends it (done, retrying,
  dead_lettered, cancelled), averaged over attempts. The start is the ``running`` record's
  ``at_ms`` or, as the worker coalesces a short "running" away, the ending record's
  ``started_at_ms``.

Counts are kept in one-minute buckets, attributed to the minute of the record's ``at_ms``,
for ``keep_ms`` (a day and a bucket). What it cannot know: transitions compacted away
before the reader started (``streams.status`` is compacted by event id, so a reader
started late sees only each older event's last state), and waits of events whose
acceptance it never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ALL_TENANTS = "*"  # ``summary(tenant=...)``: every tenant's records, and those without one
BUCKET_MS = 60_000
WINDOWS_MS = {"1h": 3_600_000, "1d": 86_400_000}
ENDS_ATTEMPT = frozenset({"done", "retrying", "dead_lettered", "cancelled"})
TERMINAL = frozenset({"done", "dead_lettered", "cancelled", "suppressed"})


@dataclass
class Counts:
    completed: int = 0
    retries: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    deferred: int = 0
    wait_ms_total: int = 0
    waits: int = 0
    processing_ms_total: int = 0
    attempts: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Event:
    first_ms: int
    accepted_ms: int | None = None
    running_ms: int | None = None
    waited: bool = False


@dataclass
class StatusStats:
    bucket_ms: int = BUCKET_MS
    keep_ms: int = WINDOWS_MS["1d"] + BUCKET_MS
    buckets: dict[tuple[str, str, str, int], Counts] = field(default_factory=dict)
    events: dict[str, _Event] = field(default_factory=dict)
    ignored: int = 0
    latest_ms: int = 0
    _expired_at: int = 0

    def apply_raw(self, value: bytes | None) -> None:
        """Apply one record value of the status topic (tombstones and non-JSON are skipped)."""
        if value is None:
            return
        try:
            record = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            self.ignored += 1
            return
        self.apply(record)

    def apply(self, record: Any) -> None:
        if not isinstance(record, dict):
            self.ignored += 1
            return
        event_id, state, at_ms = record.get("event_id"), record.get("state"), record.get("at_ms")
        family, event_type = record.get("family"), record.get("event_type")
        if not (
            isinstance(event_id, str)
            and isinstance(state, str)
            and isinstance(at_ms, int)
            and isinstance(family, str)
            and isinstance(event_type, str)
        ):
            self.ignored += 1
            return
        self.latest_ms = max(self.latest_ms, at_ms)
        tenant = record.get("tenant_id")
        counts = self._bucket(family, event_type, tenant if isinstance(tenant, str) else "", at_ms)
        track = self.events.get(event_id)
        if track is None:
            track = self.events[event_id] = _Event(first_ms=at_ms)
        published, started = record.get("published_at_ms"), record.get("started_at_ms")
        if state == "accepted":
            track.accepted_ms = at_ms
        elif track.accepted_ms is None and isinstance(published, int):
            track.accepted_ms = published
        if state == "running":
            started = at_ms
        elif not isinstance(started, int):  # the attempt's "running" record, if seen
            started = track.running_ms
        if started is not None and not track.waited and track.accepted_ms is not None:
            counts.wait_ms_total += max(0, started - track.accepted_ms)
            counts.waits += 1
            track.waited = True
        if state == "running":
            track.running_ms = at_ms
        elif state in ENDS_ATTEMPT and started is not None:
            counts.processing_ms_total += max(0, at_ms - started)
            counts.attempts += 1
            track.running_ms = None
        if state == "done":
            counts.completed += 1
        elif state == "retrying":
            counts.retries += 1
        elif state == "dead_lettered":
            counts.dead_lettered += 1
        elif state == "cancelled":
            counts.cancelled += 1
        elif state == "deferred":
            counts.deferred += 1
        if state in TERMINAL:
            self.events.pop(event_id, None)
        self._expire(at_ms)

    def _bucket(self, family: str, event_type: str, tenant: str, at_ms: int) -> Counts:
        key = (family, event_type, tenant, at_ms - at_ms % self.bucket_ms)
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = Counts()
        return counts

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.keep_ms
        while self.events:  # insertion order is first-seen order
            oldest_id = next(iter(self.events))
            if self.events[oldest_id].first_ms >= horizon:
                break
            del self.events[oldest_id]
        minute = now_ms - now_ms % self.bucket_ms
        if minute > self._expired_at:  # buckets: once per new minute, not per record
            self._expired_at = minute
            for key in [k for k in self.buckets if k[3] < horizon - self.bucket_ms]:
                del self.buckets[key]

    def summary(
        self, now_ms: int, window_ms: int, tenant: str = ALL_TENANTS
    ) -> list[dict[str, Any]]:
        """One row per (family, event type) with records of ``tenant`` (``ALL_TENANTS``:
        every record) in the minute buckets overlapping the window ending at ``now_ms``."""
        since = now_ms - window_ms
        totals: dict[tuple[str, str], Counts] = {}
        for (family, event_type, owner, start), counts in self.buckets.items():
            if tenant != ALL_TENANTS and owner != tenant:
                continue
            if start + self.bucket_ms > since and start <= now_ms:
                totals.setdefault((family, event_type), Counts()).add(counts)
        minutes = window_ms / 60_000
        return [
            {
                "family": family,
                "event_type": event_type,
                "completed": c.completed,
                "throughput_per_min": round(c.completed / minutes, 3),
                "retries": c.retries,
                "dead_lettered": c.dead_lettered,
                "failures": c.retries + c.dead_lettered,
                "cancelled": c.cancelled,
                "deferred": c.deferred,
                "avg_wait_ms": round(c.wait_ms_total / c.waits, 1) if c.waits else None,
                "avg_processing_ms": (
                    round(c.processing_ms_total / c.attempts, 1) if c.attempts else None
                ),
            }
            for (family, event_type), c in sorted(totals.items())
        ]
