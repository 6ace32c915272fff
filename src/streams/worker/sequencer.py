"""Which record of a partition may be admitted next, and when a partition needs a seek back.

Offsets are admitted strictly in sequence from the committed position: a record beyond the
next expected offset means the fetch position skipped records (stale positions after a
rebalance, records dropped while revoking), so the partition is sought back and records are
dropped until the expected one arrives. Acking past a record we never saw would commit past
it (faust #606). Our topics have contiguous offsets (delete policy, no transactional
producers).

Pure: no faust. Time comes from an injected monotonic clock (seconds); decisions come back as
values (``Verdict``, ``Stall``, offsets to seek to) that the rebalance module and the
watchdog carry out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from streams.worker.tp import TP

log = logging.getLogger(__name__)

RESYNC_RETRY_S = 30.0  # a partition out of sequence is sought back again after this long
STALL_S = 30.0  # no progress for this long with records behind the fetch position


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a record may be admitted; if not, why (the ``not_admitted`` metric's reason)
    and, when due, the offset its partition should be sought back to."""

    admitted: bool
    reason: str = ""
    seek_to: int | None = None


ADMIT = Verdict(True)


@dataclass(frozen=True, slots=True)
class Stall:
    """A partition that delivered nothing for ``for_s`` though ``offset`` can be read."""

    tp: TP
    offset: int
    for_s: float


def start_offset(committed: int | None, log_start: int | None) -> int:
    """Where a newly assigned partition is read from: its committed offset, or the log start
    when nothing is committed or the committed records were deleted."""
    return max(committed or 0, log_start or 0)


class Sequencer:
    def __init__(self, clock_s: Callable[[], float] = time.monotonic) -> None:
        self._clock_s = clock_s
        self._active: set[TP] = set()
        self._positioned = False  # partitions sought to their committed offsets
        self._draining = False
        self._expected: dict[TP, int] = {}  # next offset to admit, per partition
        # partition -> (out of sequence since, last seek back), both clock seconds
        self._resyncing: dict[TP, tuple[float, float]] = {}
        # partition -> (expected offset, time it was first seen), for stall detection
        self._progress: dict[TP, tuple[int, float]] = {}
        # partitions whose buffered records faust discarded (compat/flow_control.py)
        self._lost: set[TP] = set()

    # --- state ---------------------------------------------------------------------------

    @property
    def positioned(self) -> bool:
        return self._positioned

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def active(self) -> set[TP]:
        """The partitions of our topics assigned here (a copy)."""
        return set(self._active)

    def owns(self, tp: TP) -> bool:
        return tp in self._active

    def expected(self, tp: TP) -> int | None:
        return self._expected.get(tp)

    def resyncing(self, tp: TP) -> bool:
        return tp in self._resyncing

    def in_sequence(self) -> bool:
        """No partition has been out of sequence for ``RESYNC_RETRY_S`` or longer."""
        now = self._clock_s()
        return all(now - since < RESYNC_RETRY_S for since, _ in self._resyncing.values())

    # --- transitions ---------------------------------------------------------------------

    def assign(self, tps: Iterable[TP]) -> None:
        """A new assignment: these are ours; nothing is admitted until they are positioned."""
        self._positioned = False
        self._active = set(tps)

    def unposition(self) -> None:
        """A revocation started: nothing is admitted until the next assignment is positioned."""
        self._positioned = False

    def position(self, starts: Mapping[TP, int]) -> None:
        """``starts`` are sought to: expect each partition's start offset next."""
        now = self._clock_s()
        for tp, offset in starts.items():
            self._expected[tp] = offset
            self._progress[tp] = (offset, now)
        self._lost -= set(starts)  # records discarded before this seek are fetched again

    def positioned_all(self) -> None:
        self._positioned = True

    def release(self, tps: Iterable[TP]) -> None:
        """``tps`` are no longer ours: forget what was expected of them."""
        for tp in tps:
            self._active.discard(tp)
            self._expected.pop(tp, None)
            self._resyncing.pop(tp, None)
            self._progress.pop(tp, None)

    def drain(self) -> None:
        """Shutdown: nothing is admitted from here on."""
        self._draining = True

    # --- admission -----------------------------------------------------------------------

    def admit(self, tp: TP, offset: int) -> Verdict:
        """May the record at ``offset`` of ``tp`` be admitted? (Admitting it moves the
        expected offset on.)"""
        if self._draining:
            return Verdict(False, "draining")
        if not self._positioned:
            return Verdict(False, "not_positioned")
        if tp not in self._active:
            return Verdict(False, "not_assigned")
        expected = self._expected.get(tp)
        if expected is not None and offset != expected:
            if offset > expected:
                return Verdict(False, "out_of_sequence", self._resync(tp, expected))
            return Verdict(False, "redelivered")  # a record already admitted
        self._expected[tp] = offset + 1
        if self._resyncing.pop(tp, None) is not None:
            log.info("%s[%d] back in sequence at offset %d", tp.topic, tp.partition, offset)
        return ADMIT

    def _resync(self, tp: TP, expected: int) -> int | None:
        """The offset to seek ``tp`` back to, or None while the last seek is recent."""
        now = self._clock_s()
        since, last_seek = self._resyncing.get(tp, (now, 0.0))
        if last_seek == 0.0:
            log.warning(
                "%s[%d]: offset %d expected but later records arrived; seeking back",
                tp.topic,
                tp.partition,
                expected,
            )
        elif now - last_seek < RESYNC_RETRY_S:
            return None
        else:
            log.error(
                "%s[%d] has not delivered offset %d for %.0fs (a gap in the log? "
                "transactional or compacted input is not supported); seeking again",
                tp.topic,
                tp.partition,
                expected,
                now - since,
            )
        self._resyncing[tp] = (since, now)
        return expected

    def resume_offset(self, tp: TP) -> int | None:
        """Where a resumed partition is read again from (records fetched while it was paused
        were dropped after the fetch position passed them), or None for no seek."""
        expected = self._expected.get(tp)
        if expected is None or not self._positioned or self._draining:
            return None
        return expected

    # --- discarded buffers ---------------------------------------------------------------

    def discarded(self, tps: set[TP]) -> bool:
        """faust threw away buffered records of ``tps``; True when they are to be sought back
        now (else the next positioning does it, or nothing when draining)."""
        if not tps or self._draining:
            return False
        self._lost.update(tps)
        return self._positioned

    def take_lost(self) -> dict[TP, int]:
        """The partitions that lost records, still ours, with the offset to seek them to."""
        if not self._positioned or self._draining or not self._lost:
            return {}
        lost, self._lost = self._lost, set()
        return {
            tp: self._expected[tp] for tp in lost if tp in self._active and tp in self._expected
        }

    # --- stall detection -----------------------------------------------------------------

    def stalls(
        self, highwater: Callable[[TP], int | None], held: Callable[[TP], bool]
    ) -> list[Stall]:
        """Partitions that have records to read but deliver none (a safety net).

        A partition is a candidate when its next expected offset is below the high watermark
        (``highwater``; an exception skips it) and has not moved for ``STALL_S``, it is not
        ``held`` (paused for a retry window or recovery, or its family has no free handler
        slot) and not already resyncing. The caller still leaves out partitions with records
        waiting in a stream buffer, then reports the rest ``sought``.
        """
        if not self._positioned or self._draining:
            return []
        now = self._clock_s()
        found = []
        for tp in list(self._active):
            expected = self._expected.get(tp)
            if expected is None or tp in self._resyncing:
                continue
            try:
                high = highwater(tp)
            except Exception:
                continue
            seen, since = self._progress.setdefault(tp, (expected, now))
            if seen != expected or high is None or high <= expected:
                self._progress[tp] = (expected, now)
                continue
            if now - since < STALL_S or held(tp):
                continue
            found.append(Stall(tp, expected, now - since))
        return found

    def sought(self, stall: Stall) -> None:
        """``stall`` was sought back: its stall clock starts again."""
        self._progress[stall.tp] = (stall.offset, self._clock_s())
