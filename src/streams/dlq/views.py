"""Streaming output of DLQ records (table, JSON lines, CSV) and the wider statistics.

Pure: writers take any text stream and one record at a time, so ``export`` of 100k records
holds one record in memory. ``Breakdown`` adds to ``records.DlqStats`` the counts by tenant
and per hour / per day of failure (bounded by the distinct values seen).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from streams.dlq.records import DlqRecord, DlqStats, iso_ms

__all__ = ["CSV_FIELDS", "FORMATS", "Breakdown", "RecordWriter"]

FORMATS = ("table", "jsonl", "csv")
CSV_FIELDS = (
    "position",
    "failed_at",
    "reason",
    "attempt",
    "event_type",
    "event_id",
    "tenant_id",
    "key",
    "error_class",
    "error_fingerprint",
    "error_message",
    "replay_count",
    "state",
)
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000


def _row(record: DlqRecord, tenant: str | None, state: str | None) -> dict[str, Any]:
    return record.summary() | {
        "tenant_id": tenant,
        "replay_count": int(record.headers.get("streams-replay-count", "0") or 0),
        "state": state or "open",
    }


class RecordWriter:
    """``write(record, tenant, state)`` per record, then ``close()``."""

    def __init__(self, out: TextIO, fmt: str, *, message_width: int = 72) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
        self.out = out
        self.fmt = fmt
        self.width = message_width
        self.count = 0
        self._csv: Any = None
        if fmt == "csv":
            self._csv = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
            self._csv.writeheader()
        elif fmt == "table":
            out.write(
                f"{'POSITION':<10}  {'FAILED AT (UTC)':<24}  {'REASON':<11}  {'ATT':>3}  "
                f"{'EVENT ID':<36}  {'TENANT':<12}  ERROR\n"
            )

    def write(self, record: DlqRecord, tenant: str | None = None, state: str | None = None) -> None:
        self.count += 1
        row = _row(record, tenant, state)
        if self.fmt == "jsonl":
            self.out.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            self._csv.writerow(row)
        else:
            cls = record.error_class.rsplit(".", 1)[-1]
            error = f"{cls}: {record.error_message}" if cls else "-"
            error = " ".join(error.split())
            if len(error) > self.width:
                error = error[: self.width - 3] + "..."
            attempt = "-" if record.attempt is None else str(record.attempt)
            self.out.write(
                f"{record.position:<10}  {iso_ms(record.failed_at_ms) or '-':<24}  "
                f"{record.reason:<11}  {attempt:>3}  {(record.event_id or '-')[:36]:<36}  "
                f"{(tenant or '-')[:12]:<12}  {error}\n"
            )


@dataclass
class Breakdown:
    """``DlqStats`` plus tenant and time buckets; ``resolved`` counts what was hidden."""

    stats: DlqStats
    by_tenant: Counter[str] = field(default_factory=Counter)
    per_hour: Counter[int] = field(default_factory=Counter)  # bucket start ms -> count
    per_day: Counter[int] = field(default_factory=Counter)
    resolved: int = 0

    def add(self, record: DlqRecord, tenant: str | None) -> None:
        self.stats.add(record)
        self.by_tenant[tenant or "(none)"] += 1
        when = record.failed_at_ms
        if when is not None:
            self.per_hour[when - when % _HOUR_MS] += 1
            self.per_day[when - when % _DAY_MS] += 1

    def as_json(self, top: int | None = None) -> dict[str, Any]:
        return self.stats.as_json(top) | {
            "by_tenant": dict(self.by_tenant.most_common()),
            "per_hour": {iso_ms(k) or str(k): v for k, v in sorted(self.per_hour.items())},
            "per_day": {(iso_ms(k) or str(k))[:10]: v for k, v in sorted(self.per_day.items())},
            "hidden_resolved": self.resolved,
        }
