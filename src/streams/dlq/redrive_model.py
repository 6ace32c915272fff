"""The pure parts of a running redrive: pacing, outcome verdicts and the checkpoint.

- ``Pacer``: a send at least ``1 / rate`` after the previous one, so in any window of
  ``t`` seconds at most ``rate * t + 1`` records go out (no burst, no catching up).
- ``Tally``: what came of the sent records (``done`` = the worker's done-marker, ``failed``
  = the replay came back to a retry tier or to the DLQ), and the two stop rules: a canary
  fails on its first renewed failure; a run stops once the renewed failure rate among the
  records with an outcome passes ``max_failure_rate`` (after ``min_outcomes`` of them).
- ``Options`` (what the operator asked) and ``Report`` (what a plan or run found and did).
- ``Checkpoint``: the redrive's id, options and progress as one JSON record, the value of
  its key in the redrives topic. ``next_offsets[p]``: every DLQ position of partition p
  below it is dealt with; ``main_marks[p]``: no record this redrive sent after that
  checkpoint sits below this offset of the main topic (where a resume looks for them).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.errors import DlqError

__all__ = ["Checkpoint", "Options", "Pacer", "Report", "Tally", "new_redrive_id"]


class Pacer:
    """``wait_s()`` before each send, ``sent()`` after; ``rate_per_s`` None or 0 = unlimited.

    Each send is at least ``1 / rate`` after the previous one, with no catching up after a
    pause (a checkpoint, a slow broker), so no window ever sees more than ``rate * t + 1``.
    """

    def __init__(self, rate_per_s: float | None, clock_s: Callable[[], float]) -> None:
        if rate_per_s is not None and rate_per_s < 0:
            raise DlqError(f"--rate must be positive, got {rate_per_s}")
        self.rate_per_s = rate_per_s or None
        self._clock_s = clock_s
        self._next_s: float | None = None

    def wait_s(self) -> float:
        """Seconds to wait before the next send may go (0 = now)."""
        if self.rate_per_s is None or self._next_s is None:
            return 0.0
        return max(0.0, self._next_s - self._clock_s())

    def sent(self) -> None:
        if self.rate_per_s is not None:
            self._next_s = self._clock_s() + 1 / self.rate_per_s


@dataclass
class Tally:
    """Outcomes of the sent records, keyed by their DLQ position (``replay.source_of``)."""

    sent: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # position -> where it went

    def note_sent(self, source: str) -> None:
        self.sent.add(source)

    def note_done(self, source: str) -> None:
        if source in self.sent and source not in self.failed:
            self.done.add(source)

    def note_failed(self, source: str, where: str) -> None:
        if source in self.sent:
            self.done.discard(source)
            self.failed.setdefault(source, where)

    @property
    def outcomes(self) -> int:
        return len(self.done) + len(self.failed)

    def pending(self, among: set[str] | None = None) -> set[str]:
        wanted = self.sent if among is None else among
        return {s for s in wanted if s not in self.done and s not in self.failed}

    def canary_verdict(self, canary: set[str]) -> str | None:
        """None while undecided; ``"passed"`` or a failure description once decided."""
        failed = sorted(s for s in canary if s in self.failed)
        if failed:
            return f"{len(failed)} of {len(canary)} canary records failed again"
        if not self.pending(canary):
            return "passed"
        return None

    def failure_rate(self) -> float:
        return len(self.failed) / self.outcomes if self.outcomes else 0.0

    def over_failure_rate(self, max_failure_rate: float | None, min_outcomes: int) -> bool:
        if max_failure_rate is None or self.outcomes < max(1, min_outcomes):
            return False
        return self.failure_rate() > max_failure_rate


@dataclass
class Checkpoint:
    """One redrive's state, as kept in Kafka (module docstring)."""

    redrive_id: str
    family: str
    dlq_topic: str
    main_topic: str
    actor: str
    created_at_ms: int
    selection: dict[str, Any]
    options: dict[str, Any]
    end_offsets: dict[int, int]  # the DLQ snapshot this redrive covers
    next_offsets: dict[int, int]
    main_marks: dict[int, int]
    watch_from: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> offsets
    # like main_marks, for each priority lane's topic (topic -> partition -> offset)
    lane_marks: dict[str, dict[int, int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    state: str = "running"  # running | stopped | done | failed
    outcome: str = ""
    updated_at_ms: int = 0

    @property
    def finished(self) -> bool:
        return all(self.next_offsets.get(p, 0) >= end for p, end in self.end_offsets.items())

    def to_json(self) -> bytes:
        body = asdict(self)
        for name in ("end_offsets", "next_offsets", "main_marks"):
            body[name] = {str(k): v for k, v in body[name].items()}
        for name in ("watch_from", "lane_marks"):
            body[name] = {
                t: {str(k): v for k, v in offs.items()} for t, offs in getattr(self, name).items()
            }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        try:
            body = json.loads(data)
            for name in ("end_offsets", "next_offsets", "main_marks"):
                body[name] = {int(k): int(v) for k, v in body[name].items()}
            for name in ("watch_from", "lane_marks"):  # absent from older checkpoints
                body[name] = {
                    t: {int(k): int(v) for k, v in offs.items()}
                    for t, offs in body.get(name, {}).items()
                }
            return cls(**body)
        except (ValueError, TypeError, KeyError) as exc:
            raise DlqError(f"malformed redrive checkpoint: {exc}") from None


def new_redrive_id(now_ms: int) -> str:
    return f"rd-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now_ms / 1000))}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Options:
    rate_per_s: float | None = None
    canary: int = 0
    max_failure_rate: float | None = None
    min_outcomes: int = 10
    max_replays: int = 3
    outcome_timeout_s: float = 120.0
    checkpoint_every: int = 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.rate_per_s,
            "canary": self.canary,
            "max_failure_rate": self.max_failure_rate,
            "min_outcomes": self.min_outcomes,
            "max_replays": self.max_replays,
            "outcome_timeout_s": self.outcome_timeout_s,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Options:
        return cls(**{k: v for k, v in body.items() if k in cls.__dataclass_fields__})


@dataclass
class Report:
    """What a plan or a run found and did (``as_json`` for --json, the API and the audit)."""

    redrive_id: str
    family: str
    dry_run: bool
    state: str = "done"
    outcome: str = ""
    matched: int = 0
    sent: int = 0
    sent_before: int = 0  # by earlier runs of a resumed redrive
    parked: int = 0
    parked_before: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    by_event_type: Counter[str] = field(default_factory=Counter)
    by_fingerprint: Counter[str] = field(default_factory=Counter)
    by_tenant: Counter[str] = field(default_factory=Counter)
    first: str | None = None
    last: str | None = None
    done: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "redrive_id": self.redrive_id,
            "family": self.family,
            "dry_run": self.dry_run,
            "state": self.state,
            "outcome": self.outcome,
            "matched": self.matched,
            "sent": self.sent,
            "sent_before": self.sent_before,
            "parked": self.parked,
            "skipped": dict(self.skipped),
            "by_event_type": dict(self.by_event_type.most_common()),
            "by_fingerprint": dict(self.by_fingerprint.most_common()),
            "by_tenant": dict(self.by_tenant.most_common()),
            "first": self.first,
            "last": self.last,
            "outcomes": {"done": self.done, "failed": self.failed},
        }
