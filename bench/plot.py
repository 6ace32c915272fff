"""The picture of one bench run, drawn from its results JSON (matplotlib, Agg, no display).

Four panels: (1) every events/s case but P9 as a bar (median, min-max whisker, x P0 and
x F0 over it) with P0's and F0's medians as reference lines and P1's goals (15,000/s and
1.2 x F0) as red dashed marks; (2) P9, the SDK beside raw confluent-kafka produce of the same
bytes, with the goal at half of raw; (3) P3's latency distribution over all its rounds (a
histogram on log-spaced milliseconds, one CDF per round on the right axis) with the p50 and
p99 of the run and the 10 / 50 ms goals; (4) P7's worker RSS (no keys, 1M keys in batches of
1,000, 1M keys as a trickle) against 300 MB. A panel whose case is not in the run says so.
The title holds the run's broker version, partitions, events, rounds and payload size, and a
line with each goal's verdict (``bench.goals``).

``python -m bench plot <results.json> [-o out.png]`` redraws a picture from a results file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import goals

WIDTH_IN, HEIGHT_IN, DPI = 16.0, 10.0, 100
P0_COLOUR, F0_COLOUR, BAR_COLOUR, GOAL_COLOUR = "#4c72b0", "#8172b3", "#55a868", "#c44e52"
LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}
STATUS_MARK = {goals.MET: "met", goals.NOT_MET: "NOT MET", goals.NO_DATA: "no data"}


def draw(document: Mapping[str, Any], path: Path) -> Path:
    """Write the run's picture to ``path`` (PNG) and return it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, width_ratios=(3, 2), hspace=0.42, wspace=0.22)
    cases = goals.cases_by_id(document)
    _throughput(fig.add_subplot(grid[0, 0]), document, cases)
    _publish(fig.add_subplot(grid[0, 1]), cases)
    _latency(fig.add_subplot(grid[1, 0]), cases)
    _memory(fig.add_subplot(grid[1, 1]), cases)
    fig.suptitle(_title(document), fontsize=12, y=0.985)
    fig.text(0.5, 0.945, _verdict_line(document), ha="center", va="top", fontsize=9.5)
    fig.subplots_adjust(left=0.06, right=0.97, top=0.86, bottom=0.07)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def draw_beside(document: Mapping[str, Any], json_path: Path) -> Path | None:
    """The picture beside its JSON (same name, .png); None, with the reason on stderr, when it
    cannot be drawn: the figures are in the JSON already, so a run never fails over this."""
    try:
        return draw(document, json_path.with_suffix(".png"))
    except ImportError as exc:
        print(f"no picture ({exc}): pip install -e '.[bench]'", file=sys.stderr)
    except Exception as exc:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        print(f"no picture: drawing failed: {exc!r}", file=sys.stderr)
    return None


# --- the panels -----------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _bars(ax: Any, labels: list[str], series: list[list[float]], colours: list[str]) -> Any:
    """Median bars with min-max whiskers; returns the bar container."""
    medians = [statistics.median(v) for v in series]
    lows = [m - min(v) for m, v in zip(medians, series, strict=True)]
    highs = [max(v) - m for m, v in zip(medians, series, strict=True)]
    return ax.bar(
        labels,
        medians,
        yerr=[lows, highs],
        capsize=6,
        color=colours,
        edgecolor="black",
        linewidth=0.6,
        error_kw={"elinewidth": 1.2},
    )


def _hline(ax: Any, y: float, label: str, colour: str, style: str = "--") -> None:
    """A full-width reference line, named in the panel's legend."""
    ax.axhline(y, color=colour, linestyle=style, linewidth=1.3, zorder=0.5, label=label)


def _empty(ax: Any, title: str, why: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _throughput(ax: Any, document: Mapping[str, Any], cases: Mapping[str, Any]) -> None:
    title = "Throughput against P0 (raw pipe) and F0 (bare faust agent)"
    unit = "events/s"
    shown = [
        c
        for c in document.get("cases", [])
        if c.get("unit") == unit and c["id"] != "P9" and goals.figures(c)
    ]
    if not shown:
        _empty(ax, title, "no events/s case in this run")
        return
    p0 = goals.figures(cases.get("P0"))
    f0 = goals.figures(cases.get("F0"))
    series = [goals.figures(c) for c in shown]
    wrap = max(12, 90 // len(shown))
    labels = []  # under each bar: id, median, ratios, title (bar tops stay free for the marks)
    for c, values in zip(shown, series, strict=True):
        median = statistics.median(values)
        ratios = [
            f"{median / statistics.median(ref):.2f} x {name}"
            for name, ref in (("P0", p0), ("F0", f0))
            if ref
        ]
        title_lines = textwrap.wrap(c["title"], wrap)[:2]
        sep = "  " if len(shown) <= 4 else "\n"  # narrow bars: one ratio per line
        labels.append("\n".join([f"{c['id']}: {median:,.0f}/s", sep.join(ratios), *title_lines]))
    colours = [{"P0": P0_COLOUR, "F0": F0_COLOUR}.get(c["id"], BAR_COLOUR) for c in shown]
    _bars(ax, labels, series, colours)
    top = max(max(v) for v in series)
    if p0:
        _hline(ax, statistics.median(p0), f"P0 median {statistics.median(p0):,.0f}", P0_COLOUR, ":")
    if f0:
        _hline(ax, statistics.median(f0), f"F0 median {statistics.median(f0):,.0f}", F0_COLOUR, ":")
    p1_at = next((i for i, c in enumerate(shown) if c["id"] == "P1"), None)
    if p1_at is not None:  # P1's goals as marks across its bar
        marks = [(15_000.0, "P1 goal >= 15,000 events/s", "--")]
        if f0:
            y = 1.2 * statistics.median(f0)
            marks.append((y, f"P1 goal >= 1.2 x F0 ({y:,.0f})", "-."))
        for y, text, style in marks:
            ax.hlines(
                y,
                p1_at - 0.45,
                p1_at + 0.45,
                colors=GOAL_COLOUR,
                linestyles=style,
                lw=2,
                label=text,
            )
            top = max(top, y)
    ax.set_ylim(0, top * 1.3)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=11)
    ax.yaxis.set_major_formatter(_thousands())
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="y", alpha=0.3)


def _publish(ax: Any, cases: Mapping[str, Any]) -> None:
    title = "P9: SDK publish_batch beside raw produce of the same bytes"
    p9 = cases.get("P9")
    sdk = goals.figures(p9)
    raw = goals.figures(p9, "detail:raw_events_per_s")
    if not sdk or not raw:
        _empty(ax, title, "P9 not in this run" if p9 is None else "P9 has no sample")
        return
    bars = _bars(ax, ["SDK", "raw confluent-kafka"], [sdk, raw], [BAR_COLOUR, P0_COLOUR])
    _label_medians(ax, bars, (sdk, raw), "{:,.0f}")
    goal = 0.5 * statistics.median(raw)
    ratio = _spread(goals.figures(p9, "detail:ratio_to_raw"))
    _hline(ax, goal, f"goal: SDK >= 50% of raw ({goal:,.0f})", GOAL_COLOUR)
    p0 = goals.figures(cases.get("P0"))
    if p0:
        _hline(ax, statistics.median(p0), f"P0 median {statistics.median(p0):,.0f}", P0_COLOUR, ":")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.93), fontsize=8, framealpha=0.9)
    ax.text(
        0.02,
        0.97,
        f"SDK / raw {ratio[0]:.2f} (min {ratio[1]:.2f}, max {ratio[2]:.2f})",
        transform=ax.transAxes,
        va="top",
        fontsize=9,
    )
    ax.set_ylim(0, max(max(raw), max(sdk), goal) * 1.2)
    ax.set_ylabel("events/s")
    ax.set_title(title, fontsize=11)
    ax.yaxis.set_major_formatter(_thousands())
    ax.grid(axis="y", alpha=0.3)


def latency_histograms(case: Mapping[str, Any] | None) -> list[list[tuple[float, int]]]:
    """Each round's ``[(ms, count), ...]`` from P3's samples (rounds without one left out)."""
    rounds = []
    for sample in (case or {}).get("samples") or []:
        pairs = (sample.get("series") or {}).get("latency_ms_histogram")
        if pairs:
            rounds.append([(float(ms), int(n)) for ms, n in pairs])
    return rounds


def histogram_percentile(pairs: Sequence[tuple[float, int]], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a ``[(ms, count), ...]`` histogram in ms
    order: the same figure as ``_engine.percentile`` over the samples it counts."""
    total = sum(n for _, n in pairs)
    rank = max(1, min(total, round(q / 100 * total + 0.5)))
    seen = 0
    for ms, n in pairs:
        seen += n
        if seen >= rank:
            return float(ms)
    raise ValueError("empty histogram")


def _latency(ax: Any, cases: Mapping[str, Any]) -> None:
    import numpy as np

    title = "P3: end-to-end latency at half of P1's rate (all rounds)"
    p3 = cases.get("P3")
    rounds = latency_histograms(p3)
    if not rounds:
        why = "P3 not in this run" if p3 is None else "no latency samples in this results file"
        p50 = goals.figures(p3, "detail:p50_ms")
        p99 = goals.figures(p3, "detail:p99_ms")
        if p50 and p99:
            why += f"\n(medians: p50 {statistics.median(p50):,.0f} ms, p99 "
            why += f"{statistics.median(p99):,.0f} ms)"
        _empty(ax, title, why)
        return
    floor_ms = 0.5  # log axis: a 0 ms sample is drawn at 0.5 ms
    pooled_ms = np.array([max(ms, floor_ms) for r in rounds for ms, _ in r])
    pooled_n = np.array([n for r in rounds for _, n in r])
    hi = float(pooled_ms.max())
    # equal log widths, on whole-millisecond boundaries (the samples are whole ms)
    lo = max(1.0, float(pooled_ms.min()))
    edges = np.unique(np.round(np.geomspace(lo, max(hi, lo * 2) + 1, 50))) - 0.5
    ax.hist(pooled_ms, bins=edges, weights=pooled_n, color="#bbbbbb", edgecolor="#888888")
    ax.set_xscale("log")
    ax.set_xlabel("ms from the event's creation (SDK) to the handler call")
    ax.set_ylabel("events per bin (all rounds)")
    cdf = ax.twinx()
    for i, r in enumerate(rounds, 1):
        ms = np.array([max(x, floor_ms) for x, _ in r])
        share = np.cumsum([n for _, n in r]) / sum(n for _, n in r)
        label = (
            f"round {i}: p50 {histogram_percentile(r, 50):,.0f} ms, "
            f"p99 {histogram_percentile(r, 99):,.0f} ms"
        )
        cdf.step(ms, share, where="post", lw=1.3, alpha=0.85, label=label)
    cdf.set_ylim(0, 1.02)
    cdf.set_ylabel("share of events at or below")
    for q in (0.5, 0.99):
        cdf.axhline(q, color="grey", linestyle=":", lw=0.8)
    p50 = goals.figures(p3, "detail:p50_ms")
    p99 = goals.figures(p3, "detail:p99_ms")
    for values, label, colour in ((p50, "p50", "#1f3b73"), (p99, "p99", "#000000")):
        if values:
            at = statistics.median(values)
            ax.axvline(max(at, floor_ms), color=colour, lw=1.8)
            ax.annotate(
                f"{label} {at:,.0f} ms",
                (max(at, floor_ms), 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=8.5,
                color=colour,
                fontweight="bold",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
            )
    for at, label in ((10.0, "goal p50 <= 10 ms"), (50.0, "goal p99 <= 50 ms")):
        ax.axvline(at, color=GOAL_COLOUR, linestyle="--", lw=1.4)
        ax.annotate(
            label,
            (at, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(3, 0),
            textcoords="offset points",
            rotation=90,
            va="center",
            fontsize=8,
            color=GOAL_COLOUR,
        )
    ax.set_xlim(max(floor_ms * 0.9, float(pooled_ms.min()) * 0.7), hi * 1.3)
    ax.xaxis.set_major_formatter(_plain())
    rate = goals.figures(p3, "detail:rate_target")
    sub = f" at {statistics.median(rate):,.0f} events/s" if rate else ""
    ax.set_title(title.replace(" (all rounds)", sub + f" ({len(rounds)} rounds)"), fontsize=11)
    cdf.legend(
        loc="lower right", fontsize=8, title="CDF per round", title_fontsize=8, framealpha=0.9
    )


def _memory(ax: Any, cases: Mapping[str, Any]) -> None:
    title = "P7: worker RSS with 1M idempotency keys"
    p7 = cases.get("P7")
    names = [
        ("detail:base_rss_mb", "no keys\n(baseline)"),
        ("detail:big_rss_mb", "batches\nof 1,000"),
        ("detail:small_rss_mb", "trickle\n(batches of {small})"),
    ]
    series = [goals.figures(p7, key) for key, _ in names]
    if not all(series):
        _empty(ax, title, "P7 not in this run" if p7 is None else "P7 has no sample")
        return
    small = goals.figures(p7, "detail:small_batch")
    labels = [label.format(small=f"{small[0]:.0f}" if small else "?") for _, label in names]
    bars = _bars(ax, labels, series, ["#cccccc", BAR_COLOUR, BAR_COLOUR])
    _label_medians(ax, bars, series, "{:,.0f} MB")
    _hline(ax, 300.0, "goal <= 300 MB both ways", GOAL_COLOUR)
    ax.set_ylim(0, max(300.0, *(max(v) for v in series)) * 1.25)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    ax.set_ylabel("RSS, MB")
    rounds = len(series[0])
    ax.set_title(f"{title} ({rounds} round{'s' if rounds != 1 else ''})", fontsize=11)
    ax.grid(axis="y", alpha=0.3)


# --- text -----------------------------------------------------------------------------------


def _title(document: Mapping[str, Any]) -> str:
    broker = document.get("broker") or {}
    when = str(document.get("started_at", "?"))[:19].replace("T", " ")
    return (
        f"streams bench, {when} UTC on {document.get('host', '?')} "
        f"({document.get('cpus', '?')} CPUs): Kafka {broker.get('version', '?')}, "
        f"{document.get('partitions', '?')} partitions, {document.get('events', 0):,} events "
        f"x {document.get('repeat', '?')} rounds, {document.get('payload_bytes', '?')} B payloads"
    )


def _verdict_line(document: Mapping[str, Any]) -> str:
    parts = []
    for v in goals.verdicts(document):
        measured = "" if v.median is None else f" {v.median:{v.goal.fmt}}"
        parts.append(f"{v.goal.tag} {v.goal.target}:{measured} {STATUS_MARK[v.status]}")
    half = (len(parts) + 1) // 2
    return (
        "goals (issue 17), medians:  "
        + "  |  ".join(parts[:half])
        + "\n"
        + "  |  ".join(parts[half:])
    )


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda y, _pos: f"{y:,.0f}")


def _plain() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: f"{x:g}")


# --- python -m bench plot -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench plot", description="Redraw a bench run's picture from its JSON."
    )
    parser.add_argument("results", type=Path, help="a bench/results/<timestamp>.json")
    parser.add_argument("-o", "--out", type=Path, default=None, help="PNG (default: beside)")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text(encoding="utf-8"))
    print(goals.render(goals.verdicts(document)))
    path = draw(document, args.out or args.results.with_suffix(".png"))
    print(f"picture: {path}")
    return 0


def _label_medians(ax: Any, bars: Any, series: Any, fmt: str) -> None:
    """Each bar's median above its top (``fmt`` formats the number)."""
    for rect, values in zip(bars, series, strict=True):
        ax.annotate(
            fmt.format(statistics.median(values)),
            (rect.get_x() + rect.get_width() / 2, max(values)),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            bbox=LABEL_BOX,
        )
