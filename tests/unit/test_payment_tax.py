"""Canadian sales tax lines: rates by province and date, the stated rounding rule."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.jobs.payment_tax import (
    PROVINCES,
    TaxConfigError,
    TaxRate,
    breakdown,
    money,
    parse_table,
    rates_on,
    receipt_breakdown,
)

DAY_2026 = date(2026, 6, 1)
MS_2026 = 1_780_000_000_000  # 2026-05-28 UTC


def names(province: str, day: date = DAY_2026) -> list[tuple[str, str]]:
    return [(r.name, str(r.rate_percent)) for r in rates_on(province, day)]


def test_every_province_and_territory_has_rates() -> None:
    assert len(PROVINCES) == 13
    for province in PROVINCES:
        assert rates_on(province, DAY_2026)


@pytest.mark.parametrize(
    ("province", "expected"),
    [
        ("ON", [("HST", "13")]),
        ("QC", [("GST", "5"), ("QST", "9.975")]),
        ("BC", [("GST", "5"), ("PST", "7")]),
        ("MB", [("GST", "5"), ("RST", "7")]),
        ("SK", [("GST", "5"), ("PST", "6")]),
        ("AB", [("GST", "5")]),
        ("NS", [("HST", "14")]),
        ("NB", [("HST", "15")]),
    ],
)
def test_rates_in_force_in_2026(province: str, expected: list[tuple[str, str]]) -> None:
    assert names(province) == expected


def test_effective_dates_pick_the_entry_in_force() -> None:
    assert names("NS", date(2025, 3, 31)) == [("HST", "15")]
    assert names("NS", date(2025, 4, 1)) == [("HST", "14")]
    assert names("MB", date(2019, 6, 30)) == [("GST", "5"), ("RST", "8")]


def test_hst_13_on_a_round_total() -> None:
    parts = breakdown(11_300, rates_on("ON", DAY_2026))
    assert parts.subtotal_minor == 10_000
    assert [(x.name, x.amount_minor) for x in parts.lines] == [("HST", 1_300)]


def test_qst_is_on_the_pre_tax_price_and_rounded_half_up_per_line() -> None:
    # 114.975 CAD paid in Quebec is 100.00 + GST 5.00 + QST 9.975 -> total 11_498 cents:
    # base = 11_498 / 1.14975 = 10000.43..., GST = 500.02 -> 500, QST = 997.54 -> 998
    parts = breakdown(11_498, rates_on("QC", DAY_2026))
    assert [(x.name, x.amount_minor) for x in parts.lines] == [("GST", 500), ("QST", 998)]
    assert parts.subtotal_minor == 11_498 - 500 - 998 == 10_000


def test_half_a_cent_rounds_up() -> None:
    # base 10 cents at 5% = 0.5 cent -> 1 cent (ROUND_HALF_UP, not banker's rounding)
    parts = breakdown(105, (TaxRate("GST", Decimal(5)),))
    assert parts.lines[0].amount_minor == 5  # base 100, 5% = 5.0
    parts = breakdown(21, (TaxRate("GST", Decimal(5)),))  # base 20 -> 1.0
    assert parts.lines[0].amount_minor == 1
    parts = breakdown(10, (TaxRate("X", Decimal(5)),))  # base 9.52.. -> 0.476 -> 0
    assert parts.lines[0].amount_minor == 0


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(PROVINCES))
def test_lines_and_subtotal_add_up_to_the_amount_charged(total: int, province: str) -> None:
    rates = rates_on(province, DAY_2026)
    parts = breakdown(total, rates)
    assert parts.subtotal_minor + sum(x.amount_minor for x in parts.lines) == total
    combined = sum(r.rate_percent for r in rates) / 100
    exact_base = Decimal(total) / (1 + combined)
    for line, rate in zip(parts.lines, rates, strict=True):
        assert abs(Decimal(line.amount_minor) - exact_base * rate.rate_percent / 100) <= Decimal(
            "0.5"
        )


def test_receipt_uses_the_capture_day() -> None:
    assert receipt_breakdown(11_300, "ON", MS_2026).subtotal_minor == 10_000


def test_unknown_province_and_bad_table_are_named() -> None:
    with pytest.raises(TaxConfigError, match="province: no sales tax configured for 'XX'"):
        rates_on("XX", DAY_2026)
    with pytest.raises(TaxConfigError, match=r"^ZZ: not a Canadian province"):
        parse_table({"ZZ": []})
    with pytest.raises(TaxConfigError, match=r"^ON: entries must have increasing"):
        parse_table(
            {"ON": [{"from": "2020-01-01", "taxes": []}, {"from": "2019-01-01", "taxes": []}]}
        )
    with pytest.raises(TaxConfigError, match=r"^ON\[0\]"):
        parse_table({"ON": [{"from": "someday", "taxes": []}]})
    with pytest.raises(TaxConfigError, match="no rate for ON on 2000-01-01"):
        rates_on("ON", date(2000, 1, 1))


def test_money_text() -> None:
    assert money(1250, "cad") == "12.50 CAD"
    assert money(5, "CAD") == "0.05 CAD"
