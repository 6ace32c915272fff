"""Weighted-fair choice among a family's priority lanes: which lane the next event comes from.

A ``FairPicker`` is built from the lanes' weights and minimum shares (topics.yaml's
``priorities:``, see ``streams.catalog.Priorities``). The dispatcher asks it, once per free
slot, ``next_lane(ready)`` with ``ready[lane]`` True when that lane has an event waiting; it
answers the lane to take from (None when no lane is ready) and counts that pick. A
dispatcher that takes ``k`` events from the chosen lane for one slot (a batch) reports the
other ``k - 1`` with ``took(lane, k - 1)``.

**Target shares.** Only the *ready* lanes share the picks (an idle lane's share goes to the
busy ones: the picker is work-conserving). Lane ``l`` targets ``w_l / W`` of the picks (``W``
the ready lanes' total weight) unless that is below its ``min_share``: such lanes are fixed
at their minimum and the rest ``1 - sum(fixed minimums)`` is split by weight among the
others, repeated until no lane falls below its minimum (water-filling; at most one round
per lane, cached per ready set). ``sum(min_share) < 1`` keeps this feasible.

**Choice: smooth weighted round robin** (nginx's) over the target shares. Every pick, each
ready lane's credit grows by its share (together by 1); the lane with the largest credit
is chosen (ties: the declared lane order, so the result is deterministic) and its credit
drops by 1. Credits therefore sum to 0 and stay within a small band, so each lane's picks
follow its share with a bounded lag: a ready high lane (weight 6 of 10) is chosen at least
every second pick however deep the low lane's backlog is, and nothing depends on how many
events a lane holds, only on whether it holds one. When a lane goes idle its credit is
spread over the ready lanes (the sum stays 0), and a lane that comes back starts at 0: a
lane cannot bank credit while idle.

**Floor guard.** SWRR alone can let a lane fall up to ~1.7 picks behind its share within a
window. So each lane with a ``min_share`` ``m`` also has a floor credit ``f`` (0 when it
becomes ready): ``f += m`` every pick while the lane is ready, ``f = max(0, f - 1)`` when it
is chosen, and when ``f >= 1`` the lane is chosen *now*, ahead of SWRR (several such lanes:
the one that is furthest over, ``(f - 1) / m``, first). With one min-share lane this gives,
over **any** window of ``N`` consecutive picks during which the lane stays ready, at least
``m * N - 1`` picks of it: ``f`` ends every pick in ``[0, 1]``, and over the window
``picks = m * N + f_start - f_end + (what the max() clipped) >= m * N - 1``. With several
min-share lanes two can be due at once and one waits a pick; the property tests bound that
case by ``m * N - 2`` (found: < 1.75), a measured bound, not a proof. The guard seldom
fires (SWRR already gives ``share >= m``), so it barely moves the other lanes' shares.

Pure and O(lanes) per pick; no clock, no randomness: the same calls give the same picks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

__all__ = ["FairPicker", "PrioritiesLike", "target_shares"]


class PrioritiesLike(Protocol):
    """What the picker needs from topics.yaml's ``priorities:`` (``catalog.Priorities``)."""

    @property
    def lanes(self) -> tuple[str, ...] | list[str]: ...

    @property
    def weights(self) -> Mapping[str, int]: ...

    @property
    def min_share(self) -> Mapping[str, float]: ...


def target_shares(
    weights: Mapping[str, int], min_share: Mapping[str, float], ready: Iterable[str]
) -> dict[str, float]:
    """Each ready lane's share of the picks (water-filling; module docstring). Sums to 1."""
    busy = list(ready)
    if not busy:
        return {}
    fixed: dict[str, float] = {}
    while True:
        rest = 1.0 - sum(fixed.values())
        free = [lane for lane in busy if lane not in fixed]
        total = sum(weights[lane] for lane in free)
        below = [lane for lane in free if rest * weights[lane] / total < min_share.get(lane, 0.0)]
        if not below:
            return {
                lane: fixed[lane] if lane in fixed else rest * weights[lane] / total
                for lane in busy
            }
        for lane in below:
            fixed[lane] = min_share[lane]


class FairPicker:
    """Deterministic weighted-fair lane choice (module docstring).

    ``weights``: lane -> weight >= 1, in priority order (ties go to the earlier lane);
    ``min_share``: lane -> minimum fraction in (0, 1), summing below 1.
    """

    def __init__(self, weights: Mapping[str, int], min_share: Mapping[str, float] | None = None):
        floors = dict(min_share or {})
        if not weights:
            raise ValueError("a picker needs at least one lane")
        for lane, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
                raise ValueError(f"lane {lane!r}: weight must be an integer >= 1, got {weight!r}")
        for lane, share in floors.items():
            if lane not in weights:
                raise ValueError(f"min_share names unknown lane {lane!r}")
            if not 0.0 < share < 1.0:
                raise ValueError(f"lane {lane!r}: min_share must be in (0, 1), got {share!r}")
        if sum(floors.values()) >= 1.0:
            raise ValueError(f"min_share must sum below 1, got {sum(floors.values())!r}")
        self.lanes: tuple[str, ...] = tuple(weights)
        self._weights = dict(weights)
        self._floors = floors
        self._credit = dict.fromkeys(self.lanes, 0.0)
        self._floor = dict.fromkeys(floors, 0.0)
        self._busy: tuple[str, ...] = ()
        self._shares: dict[tuple[str, ...], dict[str, float]] = {}
        self.picks = dict.fromkeys(self.lanes, 0)
        """Picks per lane so far (next_lane and took): for metrics and tests."""

    @classmethod
    def from_priorities(cls, priorities: PrioritiesLike) -> FairPicker:
        """The picker of a family's ``priorities:`` (weights in declared lane order)."""
        weights = {lane: priorities.weights.get(lane, 1) for lane in priorities.lanes}
        return cls(weights, dict(priorities.min_share))

    def shares(self, ready: Iterable[str]) -> dict[str, float]:
        """The target share of each lane in ``ready`` (cached per ready set)."""
        key = tuple(lane for lane in self.lanes if lane in set(ready))
        return dict(self._shares_of(key))

    def next_lane(self, ready: Mapping[str, bool]) -> str | None:
        """The lane to take the next event from, counted as picked; None if none is ready.

        Lanes absent from ``ready`` count as not ready; an unknown lane name is a
        ValueError (a dispatcher/catalog mismatch must not be silently ignored)."""
        unknown = [lane for lane in ready if lane not in self._weights]
        if unknown:
            raise ValueError(f"unknown lane(s) {unknown}; lanes are {list(self.lanes)}")
        busy = tuple(lane for lane in self.lanes if ready.get(lane, False))
        self._set_busy(busy)
        if not busy:
            return None
        chosen = self._choose(busy)
        self._step(busy, chosen)
        return chosen

    def took(self, lane: str, n: int = 1) -> None:
        """Count ``n`` more events taken from ``lane`` (beyond the pick ``next_lane``
        counted), e.g. the rest of a batch. The lane counts as ready while they are taken."""
        if lane not in self._weights:
            raise ValueError(f"unknown lane {lane!r}; lanes are {list(self.lanes)}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return
        busy = (
            self._busy
            if lane in self._busy
            else tuple(x for x in self.lanes if x in self._busy or x == lane)
        )
        self._set_busy(busy)
        for _ in range(n):
            self._step(busy, lane)

    # --- internals ----------------------------------------------------------------------

    def _shares_of(self, busy: tuple[str, ...]) -> dict[str, float]:
        shares = self._shares.get(busy)
        if shares is None:
            shares = target_shares(self._weights, self._floors, busy)
            self._shares[busy] = shares
        return shares

    def _set_busy(self, busy: tuple[str, ...]) -> None:
        """Lanes that went idle lose their credits: SWRR's is spread over the ready lanes
        (the credits keep summing to 0), the floor's is dropped (it restarts at 0)."""
        if busy == self._busy:
            return
        gone = [lane for lane in self._busy if lane not in busy]
        if gone:
            freed = sum(self._credit[lane] for lane in gone)
            for lane in gone:
                self._credit[lane] = 0.0
                if lane in self._floor:
                    self._floor[lane] = 0.0
            if busy:
                each = freed / len(busy)
                for lane in busy:
                    self._credit[lane] += each
        self._busy = busy

    def _choose(self, busy: tuple[str, ...]) -> str:
        due: str | None = None
        due_by = 0.0
        for lane in busy:
            floor = self._floors.get(lane)
            if floor is None:
                continue
            over = (self._floor[lane] + floor - 1.0) / floor  # >= 0: due at this pick
            if over >= 0.0 and (due is None or over > due_by):
                due, due_by = lane, over
        if due is not None:
            return due
        shares = self._shares_of(busy)
        best = busy[0]
        best_credit = self._credit[best] + shares[best]
        for lane in busy[1:]:
            credit = self._credit[lane] + shares[lane]
            if credit > best_credit:
                best, best_credit = lane, credit
        return best

    def _step(self, busy: tuple[str, ...], chosen: str) -> None:
        shares = self._shares_of(busy)
        for lane in busy:
            self._credit[lane] += shares[lane]
            floor = self._floors.get(lane)
            if floor is not None:
                self._floor[lane] += floor
        self._credit[chosen] -= 1.0
        if chosen in self._floor:
            self._floor[chosen] = max(0.0, self._floor[chosen] - 1.0)
        self.picks[chosen] += 1
