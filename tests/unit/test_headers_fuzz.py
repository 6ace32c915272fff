"""Property tests of the header contract: ``headers.decode`` never raises and stays bounded
whatever the Kafka header list holds; valid header dicts round-trip; and a failure routed
for ANY record (its headers decoded, a planner decision, the new headers encoded) never
raises and stays bounded, so no record can wedge the route to a retry tier or the DLQ."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.catalog import Family
from streams.core import headers as h
from streams.core.errors import DecodeError, Deferred, EventValidationError, RetryAfter
from streams.core.planner import DeadLetter, is_due, plan_failure
from streams.core.policies import RetryPolicy

FUZZ = settings(max_examples=200, deadline=None)
KNOWN = sorted((*h.EVENT_HEADERS, *h.FAILURE_HEADERS, h.LANE))

names = st.one_of(
    st.sampled_from(KNOWN),
    st.sampled_from(KNOWN).map(str.encode),  # bytes names
    st.text(max_size=12),
    st.text(max_size=12).map(lambda s: "streams-" + s),
    st.binary(max_size=12),  # non-UTF-8 names
    st.just("\udc80-lone-surrogate"),
    st.integers(300, 2000).map(lambda n: "n" * n),  # over MAX_HEADER_NAME_BYTES
)
values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.text(max_size=40),
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    st.integers(1000, 200_000).map(lambda n: b"\xff" * n),  # huge, not UTF-8
    st.integers(1000, 5000).map(lambda n: "é" * n),  # huge, multi-byte
    st.just("\ud800"),  # a lone surrogate in a str value
)
header_lists = st.lists(st.tuples(names, values), max_size=60)
junk_items = st.one_of(
    st.tuples(names, values),
    st.tuples(names),  # wrong arity
    st.tuples(names, values, values),
    st.none(),
    st.integers(),
    st.tuples(st.integers(), values),  # a name that is not a name
)


def _size_bytes(headers: dict[str, str]) -> int:
    return sum(len(n.encode()) + len(v) for n, v in h.encode(headers))


# the most decode can keep: every known name, then the foreign and unknown streams-* budget
MAX_DECODED_BYTES = (
    sum(len(n) for n in KNOWN) + len(KNOWN) * h.MAX_HEADER_VALUE_BYTES + h.MAX_FOREIGN_HEADER_BYTES
)
HEADER_RESERVE_BYTES = Family.model_fields["header_reserve_bytes"].default


def _raw_size_bytes(raw: list[tuple[Any, Any]]) -> int:
    """What the header list takes in the record (names and values, no framing)."""

    def size(x: Any) -> int:
        if isinstance(x, bytes):
            return len(x)
        return len(x.encode("utf-8", errors="replace")) if isinstance(x, str) else 0

    return sum(size(n) + size(v) for n, v in raw)


@FUZZ
@given(header_lists)
def test_decode_never_raises_and_is_bounded(raw: list[tuple[Any, Any]]) -> None:
    out = h.decode(raw)
    for name, value in out.items():
        assert isinstance(name, str) and isinstance(value, str)
        assert len(value.encode("utf-8")) <= h.MAX_HEADER_VALUE_BYTES  # well-formed too
        assert len(name.encode("utf-8")) <= h.MAX_HEADER_NAME_BYTES
    foreign = [n for n in out if n not in KNOWN and not n.startswith("streams-")]
    assert len(foreign) <= h.MAX_FOREIGN_HEADERS
    assert _size_bytes(out) <= MAX_DECODED_BYTES
    assert h.decode(h.encode(out)) == out  # what we keep survives a trip through Kafka


@FUZZ
@given(st.lists(junk_items, max_size=20))
def test_decode_skips_items_that_are_not_pairs(raw: list[Any]) -> None:
    out = h.decode(raw)
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in out.items())


@FUZZ
@given(header_lists)
def test_duplicates_keep_the_last_value(raw: list[tuple[Any, Any]]) -> None:
    out = h.decode([*raw, (h.ATTEMPT, b"7"), (h.ATTEMPT, b"3")])
    assert out[h.ATTEMPT] == "3"
    assert h.attempt_of(out) == 3


@FUZZ
@given(
    st.binary(max_size=12),
    st.sampled_from([b"a", b"\xff", "\u00e9".encode(), "\u20ac".encode(), b"\xe2\x82"]),
    st.integers(h.MAX_HEADER_VALUE_BYTES // 4 - 8, h.MAX_HEADER_VALUE_BYTES + 8),
    st.binary(max_size=12),
)
def test_huge_values_are_cut_as_if_decoded_whole(
    head: bytes, fill: bytes, repeat: int, tail: bytes
) -> None:
    """decode reads only a prefix of a huge value: same result as decoding all of it
    (around the cut: 1-, 2- and 3-byte characters, a broken one, bytes that triple)."""
    value = head + fill * repeat + tail
    whole = h.truncate_utf8(value.decode("utf-8", errors="replace"), h.MAX_HEADER_VALUE_BYTES)
    assert h.decode([("x", value)]) == {"x": whole}


valid_text = st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=h.MAX_HEADER_VALUE_BYTES // 4
)
valid_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)


@FUZZ
@given(
    st.dictionaries(st.sampled_from(KNOWN), valid_text, max_size=len(KNOWN)),
    st.dictionaries(valid_names, valid_text, max_size=h.MAX_FOREIGN_HEADERS),
)
def test_round_trip(ours: dict[str, str], foreign: dict[str, str]) -> None:
    """Within the bounds (each value, and the foreign headers' byte budget) nothing is lost."""
    foreign = {n: v for n, v in foreign.items() if n not in KNOWN}
    assume(_size_bytes(foreign) <= h.MAX_FOREIGN_HEADER_BYTES)
    headers = {**foreign, **ours}
    assert h.decode(h.encode(headers)) == headers


@FUZZ
@given(st.text(max_size=80), st.integers(0, 400))
def test_truncate_utf8_is_bounded_and_well_formed(text: str, max_bytes: int) -> None:
    out = h.truncate_utf8(text, max_bytes)
    data = out.encode("utf-8")  # never a lone surrogate
    assert len(data) <= max(max_bytes, 3)


@FUZZ
@given(st.dictionaries(st.sampled_from(KNOWN), st.text(max_size=30)), st.integers(0, 2**62))
def test_integer_headers_never_raise(headers: dict[str, str], now_ms: int) -> None:
    assert h.attempt_of(headers) >= 1
    assert is_due(headers, now_ms, 0) >= 0
    for name in KNOWN:
        assert isinstance(h.int_header(headers, name, -1), int)


# --- the route of a failure: decode -> plan -> encode -----------------------------------

POLICY = RetryPolicy(delays_ms=(1_000, 60_000), max_attempts=3)
ERRORS = st.one_of(
    st.text(max_size=200).map(DecodeError),
    st.text(max_size=200).map(EventValidationError),
    st.builds(RuntimeError, st.text(max_size=2000)),
    st.builds(RetryAfter, st.floats(min_value=0) | st.just(float("nan")), st.text(max_size=50)),
    st.builds(Deferred, st.floats(min_value=0) | st.just(float("nan")), st.text(max_size=50)),
)
numbers = st.one_of(
    st.integers(-(2**80), 2**80).map(str), st.sampled_from(["", "nan", "1e3", " 7 ", "٣"])
)
number_headers = st.lists(
    st.tuples(
        st.sampled_from(
            [h.ATTEMPT, h.DEFERRALS, h.DUE_AT_MS, h.FIRST_DEFERRED_AT_MS, h.FIRST_FAILURE_AT_MS]
        ),
        numbers.map(str.encode),
    ),
    max_size=6,
)


@FUZZ
@given(header_lists, number_headers, ERRORS, st.integers(0, 2**62))
def test_routing_any_record_never_raises_and_stays_bounded(
    raw: list[tuple[Any, Any]],
    numeric: list[tuple[str, bytes]],
    error: BaseException,
    now_ms: int,
) -> None:
    headers = h.decode(raw + numeric)
    plan = plan_failure(
        family="email",
        prefix="t.",
        retry=POLICY,
        error=error,
        headers=headers,
        origin=h.Origin("t.email", 0, 5, 1_700_000_000_000),
        now_ms=now_ms,
        rand=lambda: 0.5,
        default_max_defer_ms=3_600_000,
    )
    encoded = h.encode(plan.headers)  # what the producer sends: must not raise
    # a record that fit its main topic fits the retry tiers and the DLQ (header reserve)
    growth_bytes = _size_bytes(plan.headers) - _raw_size_bytes(raw + numeric)
    assert growth_bytes <= HEADER_RESERVE_BYTES
    assert h.decode(encoded) == plan.headers
    if isinstance(plan, DeadLetter):
        assert plan.headers[h.DLQ_REASON] in h.DLQ_REASONS
        assert plan.headers[h.ERROR_CLASS]
    else:
        assert plan.due_at_ms >= now_ms


def test_regression_bytes_and_surrogate_names() -> None:
    """A bytes name raised TypeError (``startswith``; found by the properties above); a
    lone surrogate in a value made ``encode`` raise UnicodeEncodeError on the way to the
    DLQ (found reading the route)."""
    out = h.decode([(b"x-bytes", b"1"), ("x-\udc80", "v\ud800"), (b"\xff", b"\xfe")])
    assert out == {"x-bytes": "1", "x-?": "v?", "\ufffd": "\ufffd"}
    assert h.encode({"x": "\ud800"}) == [("x", b"?")]


@FUZZ
@given(st.integers(0, 120), st.integers(1, 400))
def test_worst_case_growth_fits_the_header_reserve(count: int, raw_bytes: int) -> None:
    """Every kept header made of bytes that each become U+FFFD (3 bytes for 1): the
    decoded headers plus the failure headers still fit the family's reserve."""
    junk = b"\xff" * raw_bytes
    raw = [(name, junk) for name in KNOWN]
    raw += [(b"\xfe" * 20 + str(i).encode(), junk) for i in range(count)]
    raw += [(f"streams-x{i}", junk) for i in range(count)]
    headers = h.decode(raw)
    plan = plan_failure(
        family="email",
        prefix="t.",
        retry=POLICY,
        error=DecodeError("\ufffd" * 2000),
        headers=headers,
        origin=h.Origin("t.email", 0, 5, 1_700_000_000_000),
        now_ms=2**62,
        default_max_defer_ms=3_600_000,
    )
    assert _size_bytes(plan.headers) - _raw_size_bytes(raw) <= HEADER_RESERVE_BYTES


def test_regression_unknown_streams_names_are_bounded() -> None:
    """Found by the properties above: any number of ``streams-*`` names was kept and copied to the
    retry tier (only other names were capped), and names were never bounded."""
    raw = [(f"streams-junk-{i}", b"v") for i in range(1000)] + [("n" * 5000, b"v")]
    out = h.decode([*raw, (h.ATTEMPT, b"2")])
    assert len(out) == h.MAX_FOREIGN_HEADERS + 1 and out[h.ATTEMPT] == "2"


def test_round_trip_at_the_foreign_budget() -> None:
    foreign = {f"x-{i:02d}": "v" * 120 for i in range(32)}  # 32 x 124 bytes = 3968 <= 4096
    assert h.decode(h.encode(foreign)) == foreign
    over = {**foreign, "x-31": "v" * 250}  # the last one no longer fits: dropped whole
    assert h.decode(h.encode(over)) == {n: v for n, v in foreign.items() if n != "x-31"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7), ("-3", -3), (str(2**63 - 1), 2**63 - 1), (str(2**63), -1), ("9" * 1024, -1),
     (" 7", -1), ("1_000", -1), ("\u0663", -1), ("+5", -1), ("", -1), ("1e3", -1)],
)  # fmt: skip
def test_regression_integer_headers_are_int64_ascii(value: str, expected: int) -> None:
    """Found writing the broker test: ``streams-attempt: 999...9`` (1024 digits) parsed as
    an attempt no database column or Avro long can hold; ``int()`` also took spaces,
    underscores and other scripts' digits."""
    assert h.int_header({h.ATTEMPT: value}, h.ATTEMPT, -1) == expected
