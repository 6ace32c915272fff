"""The weighted-fair lane picker: target shares, bounded lag, min-share floors, no banking."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.fairness import FairPicker, target_shares

EXAMPLE = {"high": 6, "normal": 3, "low": 1}
ALL = dict.fromkeys(EXAMPLE, True)


def run(picker: FairPicker, ready: Mapping[str, bool], n: int) -> list[str]:
    out = []
    for _ in range(n):
        lane = picker.next_lane(ready)
        assert lane is not None
        out.append(lane)
    return out


def window_counts(seq: list[str], lane: str) -> list[int]:
    """Prefix sums of picks of ``lane``: picks in [a, b) = p[b] - p[a]."""
    return list(itertools.accumulate((x == lane for x in seq), initial=0))


def worst_lag(seq: list[str], lane: str, share: float) -> float:
    """The largest ``share * N - picks`` over every window of the sequence."""
    prefix = window_counts(seq, lane)
    # max over a < b of share*(b-a) - (p[b]-p[a]) = max_b (share*b - p[b]) - min_{a<b}(...)
    worst, low = float("-inf"), float("inf")
    for b, picks in enumerate(prefix):
        value = share * b - picks
        if b:
            worst = max(worst, value - low)
        low = min(low, value)
    return worst


# --- target shares ----------------------------------------------------------------------


def test_shares_follow_weights_and_go_to_the_busy_lanes() -> None:
    floors = {"low": 0.05}
    assert target_shares(EXAMPLE, floors, ["high", "normal", "low"]) == pytest.approx(
        {"high": 0.6, "normal": 0.3, "low": 0.1}
    )
    assert target_shares(EXAMPLE, floors, ["high", "low"]) == pytest.approx(
        {"high": 6 / 7, "low": 1 / 7}
    )
    assert target_shares(EXAMPLE, floors, ["low"]) == {"low": 1.0}
    assert target_shares(EXAMPLE, floors, []) == {}


def test_a_min_share_lifts_a_lane_above_its_weight_share() -> None:
    weights = {"high": 100, "normal": 10, "low": 1}
    shares = target_shares(weights, {"low": 0.05}, ["high", "normal", "low"])
    assert shares["low"] == pytest.approx(0.05)
    assert shares["high"] / shares["normal"] == pytest.approx(10)  # the rest still by weight
    assert sum(shares.values()) == pytest.approx(1)


def test_exact_split_with_all_lanes_busy() -> None:
    picker = FairPicker(EXAMPLE, {"low": 0.05})
    seq = run(picker, ALL, 1000)
    assert {lane: seq.count(lane) for lane in EXAMPLE} == {"high": 600, "normal": 300, "low": 100}
    assert seq[:10] == [
        "high",
        "normal",
        "high",
        "low",
        "high",
        "normal",
        "high",
        "high",
        "normal",
        "high",
    ]


def test_deterministic() -> None:
    ready = [dict(zip(EXAMPLE, bits, strict=True)) for bits in itertools.product([1, 0], repeat=3)]
    seqs = []
    for _ in range(2):
        picker = FairPicker(EXAMPLE, {"low": 0.05})
        seqs.append([picker.next_lane({k: bool(v) for k, v in r.items()}) for r in ready * 50])
    assert seqs[0] == seqs[1]


def test_no_ready_lane_is_none_and_one_ready_lane_takes_everything() -> None:
    picker = FairPicker(EXAMPLE, {"low": 0.05})
    assert picker.next_lane({}) is None
    assert picker.next_lane(dict.fromkeys(EXAMPLE, False)) is None
    assert run(picker, {"low": True}, 20) == ["low"] * 20


def test_high_is_never_queued_behind_a_low_backlog() -> None:
    """A high event arriving at any moment of a long low-only run is taken within two picks:
    the low lane's credit built up while alone is not a claim on the future."""
    for arrival in (0, 1, 7, 10_000):
        picker = FairPicker(EXAMPLE, {"low": 0.05})
        run(picker, {"low": True, "normal": True}, arrival)
        taken = run(picker, ALL, 2)
        assert "high" in taken, (arrival, taken)


def test_an_idle_lane_cannot_bank_credit() -> None:
    picker = FairPicker(EXAMPLE, {"low": 0.05})
    run(picker, {"high": True}, 5000)  # low and normal idle all along
    seq = run(picker, ALL, 100)
    assert seq.count("low") <= 11 and seq.count("normal") <= 31


def test_took_counts_the_rest_of_a_batch() -> None:
    picker = FairPicker({"high": 1, "low": 1})
    ready = {"high": True, "low": True}
    assert picker.next_lane(ready) == "high"
    picker.took("high", 9)  # a batch of 10 from high
    assert run(picker, ready, 10) == ["low"] * 10  # low catches up
    assert picker.picks == {"high": 10, "low": 10}
    with pytest.raises(ValueError, match="unknown lane 'urgent'"):
        picker.took("urgent")


def test_from_priorities_and_bad_configs() -> None:
    class Prio:
        lanes = ("high", "normal", "low")
        weights = {"high": 6, "normal": 3}  # low: default weight 1
        min_share = {"low": 0.05}

    picker = FairPicker.from_priorities(Prio())
    assert picker.lanes == ("high", "normal", "low")
    assert picker.shares(["low", "high"]) == pytest.approx({"high": 6 / 7, "low": 1 / 7})
    with pytest.raises(ValueError, match="weight must be an integer >= 1"):
        FairPicker({"high": 0})
    with pytest.raises(ValueError, match="must sum below 1"):
        FairPicker({"a": 1, "b": 1}, {"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="unknown lane 'c'"):
        FairPicker({"a": 1}, {"c": 0.1})
    with pytest.raises(ValueError, match=r"unknown lane\(s\) \['urgent'\]"):
        FairPicker({"a": 1}).next_lane({"urgent": True})


# --- properties ---------------------------------------------------------------------------

_NAMES = ["l0", "l1", "l2", "l3", "l4"]


@st.composite
def configs(
    draw: st.DrawFn, max_floors: int, min_floors: int = 0
) -> tuple[dict[str, int], dict[str, float]]:
    n = draw(st.integers(2, 5))
    lanes = _NAMES[:n]
    weights = {lane: draw(st.integers(1, 100)) for lane in lanes}
    floored = draw(
        st.lists(
            st.sampled_from(lanes), unique=True, min_size=min_floors, max_size=min(max_floors, n)
        )
    )
    budget = draw(st.floats(0.01, 0.98))
    parts = [draw(st.floats(0.05, 1.0)) for _ in floored]
    floors = {lane: budget * p / sum(parts) for lane, p in zip(floored, parts, strict=True)}
    return weights, floors


@settings(database=None, max_examples=100, deadline=None)
@given(cfg=configs(max_floors=1, min_floors=1), n=st.integers(1, 400))
def test_one_floor_lane_gets_its_min_share_in_every_window(
    cfg: tuple[dict[str, int], dict[str, float]], n: int
) -> None:
    """All lanes busy: in every window of N picks the min-share lane gets >= m*N - 1."""
    weights, floors = cfg
    picker = FairPicker(weights, floors)
    seq = run(picker, dict.fromkeys(weights, True), n)
    for lane, share in floors.items():
        assert worst_lag(seq, lane, share) <= 1 + 3 * share + 1e-9


@settings(database=None, max_examples=100, deadline=None)
@given(cfg=configs(max_floors=5), n=st.integers(1, 400))
def test_several_floor_lanes_get_their_min_share_within_two(
    cfg: tuple[dict[str, int], dict[str, float]], n: int
) -> None:
    weights, floors = cfg
    picker = FairPicker(weights, floors)
    seq = run(picker, dict.fromkeys(weights, True), n)
    for lane, share in floors.items():
        assert worst_lag(seq, lane, share) <= 2


@settings(database=None, max_examples=100, deadline=None)
@given(cfg=configs(max_floors=5), n=st.integers(1, 400), data=st.data())
def test_busy_lanes_get_their_share_with_bounded_lag(
    cfg: tuple[dict[str, int], dict[str, float]], n: int, data: st.DataObject
) -> None:
    """With a fixed set of busy lanes, every busy lane (the high lane first of all) gets its
    target share, weight-proportional, minus at most 3 picks in any window; idle lanes get
    nothing and their share goes to the busy ones."""
    weights, floors = cfg
    busy = data.draw(st.lists(st.sampled_from(list(weights)), unique=True, min_size=1))
    ready = {lane: lane in busy for lane in weights}
    picker = FairPicker(weights, floors)
    seq = run(picker, ready, n)
    shares = picker.shares(busy)
    assert sum(shares.values()) == pytest.approx(1)
    assert set(seq) <= set(busy)
    rest = 1 - sum(floors.get(lane, 0) for lane in busy)
    total = sum(weights[lane] for lane in busy)
    for lane in busy:
        assert shares[lane] >= rest * weights[lane] / total - 1e-9  # weights, minus floors
        assert shares[lane] >= floors.get(lane, 0) - 1e-9
        assert worst_lag(seq, lane, shares[lane]) <= 3


@settings(database=None, max_examples=100, deadline=None)
@given(
    cfg=configs(max_floors=1, min_floors=1),
    steps=st.lists(st.tuples(st.integers(0, 31), st.integers(0, 3)), min_size=1, max_size=300),
)
def test_floor_holds_while_other_lanes_flap(
    cfg: tuple[dict[str, int], dict[str, float]], steps: list[tuple[int, int]]
) -> None:
    """The floor lane stays busy while the others come and go at every pick: it still gets
    >= m*N - 1 of every window, less what batches of up to 4 (``took``) held it back."""
    weights, floors = cfg
    lanes = list(weights)
    picker = FairPicker(weights, floors)
    seq: list[str] = []
    for mask, extra in steps:
        ready = {lane: bool(mask >> i & 1) or lane in floors for i, lane in enumerate(lanes)}
        lane = picker.next_lane(ready)
        assert lane is not None and ready[lane]
        picker.took(lane, extra)
        seq.extend([lane] * (extra + 1))
    for lane, share in floors.items():
        assert worst_lag(seq, lane, share) <= 1 + 3 * share + 1e-9


def test_the_repository_catalogs_email_lanes_build_a_picker() -> None:
    from pathlib import Path

    from streams.catalog import load_catalog

    catalog = load_catalog(Path(__file__).resolve().parents[2] / "topics.yaml")
    priorities = catalog.family("email").priorities
    assert priorities is not None
    picker = FairPicker.from_priorities(priorities)
    assert picker.lanes == ("high", "normal", "low")
    seq = run(picker, ALL, 100)
    assert (seq.count("high"), seq.count("normal"), seq.count("low")) == (60, 30, 10)
