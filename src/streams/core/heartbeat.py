"""Worker heartbeats: the record each worker publishes to ``streams.workers`` and the view
an operator reads from them. Pure (JSON in, dataclasses out).

A heartbeat says what one worker process holds *now*: per family its in-flight count, the
retry records it holds until due, its assigned partitions (by topic) and whether it
paused the family; per dependency its circuit
breaker state. The topic is compacted by worker id; a worker that stops cleanly publishes a
tombstone, one that dies just stops beating and ``live`` drops it after ``expire_after``
missed intervals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HEARTBEAT_VERSION = 1
DEFAULT_EXPIRE_AFTER = 3  # missed intervals before a silent worker is dropped


@dataclass(frozen=True)
class FamilyBeat:
    in_flight: int = 0
    paused: bool = False
    partitions: dict[str, list[int]] = field(default_factory=dict)  # topic -> partitions
    waiting: int = 0  # retry records held in memory until due


@dataclass(frozen=True)
class Heartbeat:
    worker_id: str
    at_ms: int
    interval_ms: int
    families: dict[str, FamilyBeat] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)  # dependency -> state

    def encode(self) -> bytes:
        body = {
            "v": HEARTBEAT_VERSION,
            "worker_id": self.worker_id,
            "at_ms": self.at_ms,
            "interval_ms": self.interval_ms,
            "families": {
                name: {
                    "in_flight": fam.in_flight,
                    "paused": fam.paused,
                    "partitions": {t: sorted(ps) for t, ps in sorted(fam.partitions.items())},
                    "waiting": fam.waiting,
                }
                for name, fam in sorted(self.families.items())
            },
            "breakers": dict(sorted(self.breakers.items())),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def as_dict(self) -> dict[str, Any]:
        return json.loads(self.encode())  # type: ignore[no-any-return]


class BadHeartbeat(ValueError):
    """A heartbeat value that is not a heartbeat (the reason names the field)."""


def decode(value: bytes) -> Heartbeat:
    """The heartbeat in ``value``; raises BadHeartbeat naming the field that is wrong."""
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadHeartbeat(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadHeartbeat("not a JSON object")
    worker_id = body.get("worker_id")
    if not isinstance(worker_id, str) or not worker_id:
        raise BadHeartbeat("worker_id: a non-empty string is required")
    at_ms, interval_ms = body.get("at_ms"), body.get("interval_ms")
    if not isinstance(at_ms, int) or not isinstance(interval_ms, int) or interval_ms <= 0:
        raise BadHeartbeat("at_ms and interval_ms: integers (interval > 0) are required")
    families = body.get("families") or {}
    breakers = body.get("breakers") or {}
    if not isinstance(families, dict) or not isinstance(breakers, dict):
        raise BadHeartbeat("families and breakers: JSON objects are required")
    return Heartbeat(
        worker_id=worker_id,
        at_ms=at_ms,
        interval_ms=interval_ms,
        families={str(k): _family(str(k), v) for k, v in families.items()},
        breakers={str(k): str(v) for k, v in breakers.items()},
    )


def _family(name: str, raw: Any) -> FamilyBeat:
    if not isinstance(raw, dict):
        raise BadHeartbeat(f"families.{name}: a JSON object is required")
    parts = raw.get("partitions") or {}
    if not isinstance(parts, dict) or not all(
        isinstance(ps, list) and all(isinstance(p, int) for p in ps) for ps in parts.values()
    ):
        raise BadHeartbeat(f"families.{name}.partitions: topic -> list of integers")
    in_flight, waiting = raw.get("in_flight", 0), raw.get("waiting", 0)
    if not isinstance(in_flight, int) or not isinstance(waiting, int):
        raise BadHeartbeat(f"families.{name}.in_flight and waiting: integers are required")
    return FamilyBeat(
        in_flight=in_flight,
        paused=bool(raw.get("paused", False)),
        partitions={str(t): list(ps) for t, ps in parts.items()},
        waiting=waiting,
    )


def live(
    beats: Mapping[str, Heartbeat], now_ms: int, expire_after: int = DEFAULT_EXPIRE_AFTER
) -> list[Heartbeat]:
    """The workers whose last beat is at most ``expire_after`` of their intervals old."""
    return sorted(
        (b for b in beats.values() if now_ms - b.at_ms <= expire_after * b.interval_ms),
        key=lambda b: b.worker_id,
    )


def in_flight(beats: Iterable[Heartbeat], family: str) -> int:
    return sum(b.families[family].in_flight for b in beats if family in b.families)


def waiting(beats: Iterable[Heartbeat], family: str) -> int:
    return sum(b.families[family].waiting for b in beats if family in b.families)


def owners(beats: Iterable[Heartbeat], topic: str) -> dict[int, str]:
    """partition -> worker id of the workers claiming ``topic``'s partitions."""
    out: dict[int, str] = {}
    for beat in beats:
        for fam in beat.families.values():
            for p in fam.partitions.get(topic, ()):
                out[p] = beat.worker_id
    return out
