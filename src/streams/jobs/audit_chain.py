"""Tamper evidence for the audit log: a hash chain per subject (pure code).

Each subject's rows are numbered ``seq`` 1, 2, 3, ... and each row stores ``prev_hash``
(the previous row's ``hash``; 64 zeros for the first) and ``hash`` = SHA-256 of the
row's canonical content: its ``HASHED_FIELDS`` as compact JSON with sorted keys. A
chain head per subject (its last ``seq`` and ``hash``) sits in a table of its own.

``verify_chains`` walks the rows in (subject, seq) order and names each break: an edited
row (its content no longer matches its hash), a row deleted from the middle (a gap in
``seq``, or a ``prev_hash`` that points at nothing), a deleted tail (the head is ahead of
the last row), a rewritten row whose hash was recomputed (the next row's ``prev_hash``
no longer matches). Someone able to rewrite a whole chain and its head is not caught:
that needs the head anchored outside the database (a later step).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64
HASHED_FIELDS = (
    "event_id",
    "event_type",
    "tenant_id",
    "subject_id",
    "actor_id",
    "occurred_at_ms",
    "recorded_at_ms",
    "seq",
    "payload",
    "prev_hash",
)


def canonical_json(value: Any) -> str:
    """``value`` as compact JSON with sorted keys (one text per value, stable)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the row's canonical content (its ``HASHED_FIELDS``)."""
    content = canonical_json({name: row[name] for name in HASHED_FIELDS})
    return hashlib.sha256(content.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """What one audit event contributes to the log (before it is chained)."""

    event_id: str
    event_type: str
    tenant_id: str | None
    subject_id: str
    actor_id: str
    occurred_at_ms: int
    payload: str  # canonical JSON of the event's other fields


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


def entry_from_event(event: Any) -> AuditEntry:
    """The entry of a validated ``audit.*`` event (``streams.events``)."""
    envelope = event.envelope
    payload = event.model_dump(mode="json", exclude={"envelope", "subject_id", "actor_id"})
    payload["producer"] = envelope.producer
    payload["correlation_id"] = envelope.correlation_id
    return AuditEntry(
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        tenant_id=envelope.tenant_id,
        subject_id=event.subject_id,
        actor_id=event.actor_id,
        occurred_at_ms=envelope.occurred_at_ms,
        payload=canonical_json(payload),
    )


def chain_entries(
    entries: Iterable[AuditEntry], heads: Mapping[str, ChainHead], recorded_at_ms: int
) -> tuple[list[dict[str, Any]], dict[str, ChainHead]]:
    """The rows for ``entries`` appended, in order, to their subjects' chains, and the new
    heads of the subjects they touched (``heads``: the current heads; absent = empty)."""
    current = dict(heads)
    touched: dict[str, ChainHead] = {}
    rows: list[dict[str, Any]] = []
    for entry in entries:
        head = current.get(entry.subject_id, ChainHead(0, GENESIS_HASH))
        row: dict[str, Any] = {
            "event_id": entry.event_id,
            "event_type": entry.event_type,
            "tenant_id": entry.tenant_id,
            "subject_id": entry.subject_id,
            "actor_id": entry.actor_id,
            "occurred_at_ms": entry.occurred_at_ms,
            "recorded_at_ms": recorded_at_ms,
            "seq": head.seq + 1,
            "payload": entry.payload,
            "prev_hash": head.hash,
        }
        row["hash"] = row_hash(row)
        rows.append(row)
        current[entry.subject_id] = touched[entry.subject_id] = ChainHead(row["seq"], row["hash"])
    return rows, touched


@dataclass(frozen=True)
class ChainProblem:
    """One break in a subject's chain: at row ``seq`` (event ``event_id``) when known."""

    subject_id: str
    seq: int | None
    event_id: str | None
    reason: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "chain"
        row = f" (event {self.event_id})" if self.event_id else ""
        return f"subject {self.subject_id!r} {where}{row}: {self.reason}"


def _check_row(row: Mapping[str, Any], expected_seq: int, prev_hash: str) -> str | None:
    if row["seq"] != expected_seq:
        return f"rows seq {expected_seq}..{row['seq'] - 1} are missing (deleted)"
    if row["prev_hash"] != prev_hash:
        return "prev_hash does not match the previous row's hash (a row was rewritten)"
    if row_hash(row) != row["hash"]:
        return "content does not match its hash (the row was edited)"
    return None


def _check_subject(
    subject: str, rows: list[Mapping[str, Any]], head: ChainHead | None
) -> Iterator[ChainProblem]:
    expected_seq, prev_hash = 1, GENESIS_HASH
    for row in rows:
        reason = _check_row(row, expected_seq, prev_hash)
        if reason is not None:
            yield ChainProblem(subject, row["seq"], row["event_id"], reason)
        expected_seq, prev_hash = row["seq"] + 1, row["hash"]
    last = ChainHead(expected_seq - 1, prev_hash)
    if head is None:
        yield ChainProblem(subject, None, None, "rows without a chain head")
    elif head.seq != last.seq:
        yield ChainProblem(
            subject,
            head.seq,
            None,
            f"the head says seq {head.seq}, the last row is {last.seq} (rows deleted at the end)",
        )
    elif head.hash != last.hash:
        yield ChainProblem(subject, head.seq, None, "the head's hash differs from the last row's")


class ChainVerifier:
    """``verify_chains`` fed a row at a time (rows sorted by subject_id, then seq), so a
    caller can page through a large table; holds one subject's rows at a time."""

    def __init__(self, heads: Mapping[str, ChainHead]) -> None:
        self.heads = heads
        self.rows_checked = 0
        self._seen: set[str] = set()
        self._subject: str | None = None
        self._group: list[Mapping[str, Any]] = []

    def feed(self, row: Mapping[str, Any]) -> list[ChainProblem]:
        self.rows_checked += 1
        problems: list[ChainProblem] = []
        if row["subject_id"] != self._subject:
            problems = self._close_subject()
            self._subject = row["subject_id"]
            self._seen.add(row["subject_id"])
        self._group.append(row)
        return problems

    def _close_subject(self) -> list[ChainProblem]:
        if self._subject is None:
            return []
        problems = list(_check_subject(self._subject, self._group, self.heads.get(self._subject)))
        self._subject, self._group = None, []
        return problems

    def finish(self) -> list[ChainProblem]:
        """The last subject's problems, and the subjects with a head and no rows."""
        problems = self._close_subject()
        for lost in sorted(set(self.heads) - self._seen):
            head = self.heads[lost]
            problems.append(ChainProblem(lost, head.seq, None, "every row of the chain is missing"))
        return problems


def verify_chains(
    rows: Iterable[Mapping[str, Any]], heads: Mapping[str, ChainHead]
) -> list[ChainProblem]:
    """Every break in the chains of ``rows`` (sorted by subject_id, then seq) against
    ``heads``; a subject with a head and no rows has lost all of them."""
    verifier = ChainVerifier(heads)
    problems: list[ChainProblem] = []
    for row in rows:
        problems += verifier.feed(row)
    return problems + verifier.finish()
