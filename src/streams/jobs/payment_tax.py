"""Canadian sales tax lines of a receipt (pure): GST, HST, PST/RST and QST per province.

Rates are configuration data (``data/ca_sales_tax.json``): per province, entries that apply
from a date (inclusive; the capture's UTC date) until the next entry. Amounts are integer
minor units (cents).

The rounding rule: a payment's ``amount_minor`` is the tax-inclusive total the customer
paid. With ``R`` the sum of the province's rates, the exact pre-tax base is
``total / (1 + R)``; each tax line is ``base * rate`` rounded half-up to the cent
(separately, each line on the pre-tax base, as Quebec computes QST on the price without
GST since 2013); the subtotal is ``total - sum(lines)``. So the lines and the subtotal
always add up to exactly what was charged, and each line is within half a cent of its
exact value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

FRENCH_NAMES = {"GST": "TPS", "HST": "TVH", "QST": "TVQ", "PST": "TVP", "RST": "TVD"}
PROVINCES = ("AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT")


class TaxConfigError(ValueError):
    """The tax table is invalid, or has no entry for a province and date."""


@dataclass(frozen=True)
class TaxRate:
    name: str
    rate_percent: Decimal


@dataclass(frozen=True)
class TaxLine:
    name: str
    rate_percent: Decimal
    amount_minor: int

    def label(self, locale: str = "en") -> str:
        """``QST 9.975%``; in French ``TVQ 9,975 %`` (the tax's French name)."""
        rate = format(self.rate_percent.normalize(), "f")
        if locale == "fr":
            return f"{FRENCH_NAMES.get(self.name, self.name)} {rate.replace('.', ',')} %"
        return f"{self.name} {rate}%"


@dataclass(frozen=True)
class Breakdown:
    subtotal_minor: int
    lines: tuple[TaxLine, ...]
    total_minor: int


TaxTable = dict[str, list[tuple[date, tuple[TaxRate, ...]]]]


def parse_table(data: dict[str, Any]) -> TaxTable:
    """The table from its JSON form; TaxConfigError names the bad entry."""
    table: TaxTable = {}
    for province, entries in data.items():
        if province.startswith("_"):
            continue
        if province not in PROVINCES:
            raise TaxConfigError(f"{province}: not a Canadian province or territory code")
        parsed: list[tuple[date, tuple[TaxRate, ...]]] = []
        for i, entry in enumerate(entries):
            where = f"{province}[{i}]"
            try:
                start = date.fromisoformat(entry["from"])
                rates = tuple(TaxRate(t["name"], Decimal(t["rate"])) for t in entry["taxes"])
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                raise TaxConfigError(f"{where}: {exc!r}") from None
            if any(not (0 <= r.rate_percent < 100) for r in rates):
                raise TaxConfigError(f"{where}: a rate must be a percentage in [0, 100)")
            parsed.append((start, rates))
        if [d for d, _ in parsed] != sorted({d for d, _ in parsed}):
            raise TaxConfigError(f"{province}: entries must have increasing 'from' dates")
        table[province] = parsed
    return table


@lru_cache(maxsize=1)
def default_table() -> TaxTable:
    text = resources.files("streams.jobs").joinpath("data/ca_sales_tax.json").read_text()
    return parse_table(json.loads(text))


def rates_on(province: str, day: date, table: TaxTable | None = None) -> tuple[TaxRate, ...]:
    """The rates in force in ``province`` on ``day``."""
    entries = (table if table is not None else default_table()).get(province.upper())
    if not entries:
        raise TaxConfigError(f"province: no sales tax configured for {province!r}")
    current = [rates for start, rates in entries if start <= day]
    if not current:
        raise TaxConfigError(f"province: no rate for {province} on {day.isoformat()}")
    return current[-1]


def _round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def breakdown(total_minor: int, rates: tuple[TaxRate, ...]) -> Breakdown:
    """The tax lines and subtotal of a tax-inclusive total (the module's rounding rule)."""
    if total_minor < 0:
        raise ValueError(f"total_minor must be >= 0, got {total_minor}")
    combined = sum((r.rate_percent for r in rates), Decimal(0)) / 100
    base = Decimal(total_minor) / (1 + combined)
    lines = tuple(
        TaxLine(r.name, r.rate_percent, _round_half_up(base * r.rate_percent / 100)) for r in rates
    )
    return Breakdown(total_minor - sum(line.amount_minor for line in lines), lines, total_minor)


def receipt_breakdown(
    total_minor: int, province: str, at_ms: int, table: TaxTable | None = None
) -> Breakdown:
    """The breakdown for a capture in ``province`` at ``at_ms`` (its UTC date)."""
    day = datetime.fromtimestamp(at_ms / 1000, tz=UTC).date()
    return breakdown(total_minor, rates_on(province, day, table))


def money(amount_minor: int, currency: str) -> str:
    """``12.50 CAD`` (two-decimal currencies)."""
    sign = "-" if amount_minor < 0 else ""
    whole, cents = divmod(abs(amount_minor), 100)
    return f"{sign}{whole}.{cents:02d} {currency.upper()}"
