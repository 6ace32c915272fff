"""Shared by the cost-of-a-feature cases (P6 idempotency, P12 status tracking): P1 drained
with the feature off and on in one round, in alternating order (the second drain of a round
tends to be the slower on shared machines), valued as ``100 * (1 - on / off)`` percent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bench.harness import Sample, Summary

Drain = Callable[[], tuple[float, Mapping[str, Any]]]


def off_then_on(rounds: int, off: Drain, on: Drain, fields: tuple[str, ...]) -> Sample:
    """Run both drains (off first in odd rounds) and the slowdown sample of the round, with
    the drains' ``fields`` as ``on_<field>`` / ``off_<field>`` details."""
    if rounds % 2:
        off_rate, off_details = off()
        on_rate, on_details = on()
    else:
        on_rate, on_details = on()
        off_rate, off_details = off()
    details: dict[str, Any] = {"on_events_per_s": on_rate, "off_events_per_s": off_rate}
    for name in fields:
        details[f"on_{name}"] = on_details[name]
        details[f"off_{name}"] = off_details[name]
    return Sample(100.0 * (1.0 - on_rate / off_rate), details)


def note(feature: str) -> Callable[[Summary], str]:
    """The case's note: both medians (min, max) and CPU per event, for ``feature``."""

    def render(summary: Summary) -> str:
        on = summary.detail("on_events_per_s")
        off = summary.detail("off_events_per_s")
        on_us = summary.detail("on_cpu_us_per_event")
        off_us = summary.detail("off_cpu_us_per_event")
        return (
            f"{feature} off median {off[0]:,.0f} events/s (min {off[1]:,.0f}, max "
            f"{off[2]:,.0f}, {off_us[0]:.0f} us CPU/event); on median {on[0]:,.0f} (min "
            f"{on[1]:,.0f}, max {on[2]:,.0f}, {on_us[0]:.0f} us CPU/event); value = % slower "
            "with it"
        )

    return render
