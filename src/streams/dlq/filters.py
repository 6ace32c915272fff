"""Which DLQ records an operator selected: one filter shared by list, export, stats, redrive.

Pure. Every criterion is optional and they combine with AND; a criterion given several
values (``--reason exhausted --reason permanent``) matches any of them. The tenant lives in
the event's envelope (inside the Avro value), so it is passed in by the caller, which
decodes the value only when a tenant filter or a tenant statistic needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.dlq.records import DlqRecord
from streams.errors import DlqError

__all__ = ["DlqFilter", "parse_age_ms", "parse_time_ms"]

_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_age_ms(text: str) -> int:
    """``"90s" | "15m" | "2h" | "7d" | "1w"`` -> milliseconds; DlqError otherwise."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _UNITS_MS else ""
    number = raw[: -1 if unit else None]
    if not unit or not number.isdigit():
        raise DlqError(f"bad duration {text!r}: expected a whole number and s/m/h/d/w, e.g. 2h")
    return int(number) * _UNITS_MS[unit]


def parse_time_ms(text: str, now_ms: int) -> int:
    """An ISO 8601 time (UTC when no offset), epoch milliseconds, or an age ago (``2h``)."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    if raw[-1:].lower() in _UNITS_MS and raw[:-1].isdigit():
        return now_ms - parse_age_ms(raw)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise DlqError(
            f"bad time {text!r}: expected ISO 8601 (2026-12-02T10:00:00Z), epoch "
            "milliseconds, or an age such as 2h"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def _lower(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values if v.strip())


@dataclass(frozen=True)
class DlqFilter:
    """Record selection. ``since_ms <= failed_at < until_ms``; attempts inclusive."""

    reasons: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()  # full name or the last dotted part
    fingerprints: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    min_attempt: int | None = None
    max_attempt: int | None = None
    text: str | None = None  # case-insensitive substring of the error message
    positions: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    @classmethod
    def build(
        cls,
        *,
        reasons: Iterable[str] = (),
        error_classes: Iterable[str] = (),
        fingerprints: Iterable[str] = (),
        event_types: Iterable[str] = (),
        tenants: Iterable[str] = (),
        keys: Iterable[str] = (),
        since_ms: int | None = None,
        until_ms: int | None = None,
        min_attempt: int | None = None,
        max_attempt: int | None = None,
        text: str | None = None,
        positions: Iterable[tuple[int, int]] = (),
    ) -> DlqFilter:
        if since_ms is not None and until_ms is not None and since_ms >= until_ms:
            raise DlqError("--since must be before --until")
        if min_attempt is not None and max_attempt is not None and min_attempt > max_attempt:
            raise DlqError("--min-attempt must not exceed --max-attempt")
        return cls(
            reasons=_lower(reasons),
            error_classes=_lower(error_classes),
            fingerprints=_lower(fingerprints),
            event_types=_lower(event_types),
            tenants=frozenset(t for t in tenants if t),
            keys=frozenset(k for k in keys if k),
            since_ms=since_ms,
            until_ms=until_ms,
            min_attempt=min_attempt,
            max_attempt=max_attempt,
            text=text.lower() if text else None,
            positions=frozenset(positions),
        )

    @property
    def needs_tenant(self) -> bool:
        return bool(self.tenants)

    def matches(self, record: DlqRecord, tenant: str | None = None) -> bool:
        if self.positions and (record.partition, record.offset) not in self.positions:
            return False
        if self.reasons and record.reason not in self.reasons:
            return False
        if self.error_classes:
            cls = record.error_class.lower()
            if cls not in self.error_classes and cls.rsplit(".", 1)[-1] not in self.error_classes:
                return False
        if self.fingerprints and record.fingerprint.lower() not in self.fingerprints:
            return False
        if self.event_types and (record.event_type or "").lower() not in self.event_types:
            return False
        if self.tenants and (tenant is None or tenant not in self.tenants):
            return False
        if self.keys and _key_text(record.key) not in self.keys:
            return False
        when = record.failed_at_ms
        if self.since_ms is not None and (when is None or when < self.since_ms):
            return False
        if self.until_ms is not None and (when is None or when >= self.until_ms):
            return False
        attempt = record.attempt
        if self.min_attempt is not None and (attempt is None or attempt < self.min_attempt):
            return False
        if self.max_attempt is not None and (attempt is None or attempt > self.max_attempt):
            return False
        return not (self.text and self.text not in record.error_message.lower())

    def describe(self) -> dict[str, Any]:
        """The criteria given, JSON-ready (for reports, checkpoints and the audit event)."""
        out: dict[str, Any] = {}
        for name in ("reasons", "error_classes", "fingerprints", "event_types", "tenants", "keys"):
            values = getattr(self, name)
            if values:
                out[name] = sorted(values)
        for name in ("since_ms", "until_ms", "min_attempt", "max_attempt", "text"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.positions:
            out["positions"] = [f"{p}:{o}" for p, o in sorted(self.positions)]
        return out

    @classmethod
    def from_description(cls, body: dict[str, Any]) -> DlqFilter:
        """The inverse of ``describe`` (a resumed redrive re-reads its filter)."""
        positions = []
        for text in body.get("positions", []):
            p, _, o = str(text).partition(":")
            positions.append((int(p), int(o)))
        return cls.build(
            reasons=body.get("reasons", []),
            error_classes=body.get("error_classes", []),
            fingerprints=body.get("fingerprints", []),
            event_types=body.get("event_types", []),
            tenants=body.get("tenants", []),
            keys=body.get("keys", []),
            since_ms=body.get("since_ms"),
            until_ms=body.get("until_ms"),
            min_attempt=body.get("min_attempt"),
            max_attempt=body.get("max_attempt"),
            text=body.get("text"),
            positions=positions,
        )


def _key_text(key: bytes | None) -> str:
    if key is None:
        return ""
    return key.decode("utf-8", errors="replace")
