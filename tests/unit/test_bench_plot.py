"""The bench's goal verdicts and its picture, from synthetic results dicts (no broker)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench import goals, plot
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _case(case_id: str, unit: str, samples: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": case_id, "title": f"{case_id} case", "unit": unit, "samples": samples, **extra}


def _latency_histogram(seed: int, n: int = 3000) -> list[list[int]]:
    rng = random.Random(seed)
    counts: dict[int, int] = {}
    for _ in range(n):
        ms = round(rng.lognormvariate(3.0, 0.6))
        counts[ms] = counts.get(ms, 0) + 1
    return [[ms, c] for ms, c in sorted(counts.items())]


def results(
    p1: tuple[float, ...] = (16_000, 15_500, 17_000),
    f0: tuple[float, ...] = (12_000, 13_000, 12_500),
    p3_p50: tuple[float, ...] = (8, 9, 12),
    p3_p99: tuple[float, ...] = (40, 45, 60),
    p7_big: float = 195,
    p7_small: float = 383,
    p9_ratio: tuple[float, ...] = (0.10, 0.14, 0.07),
    histograms: bool = True,
) -> dict[str, Any]:
    """A results document shaped like the harness's (only the fields the readers use)."""
    p3_samples = [
        {
            "value": p99,
            "details": {"p50_ms": p50, "p99_ms": p99, "rate_target": 8000.0, "rate_from_p1": 1.0},
        }
        | ({"series": {"latency_ms_histogram": _latency_histogram(i)}} if histograms else {})
        for i, (p50, p99) in enumerate(zip(p3_p50, p3_p99, strict=True))
    ]
    p9_samples = [
        {"value": 300_000 * r, "details": {"ratio_to_raw": r, "raw_events_per_s": 300_000.0}}
        for r in p9_ratio
    ]
    p7_details = {
        "base_rss_mb": 82.0,
        "big_rss_mb": p7_big,
        "small_rss_mb": p7_small,
        "small_batch": 2.0,
    }
    return {
        "started_at": "2026-12-02T18:00:00+00:00",
        "host": "test",
        "cpus": 2,
        "broker": {"version": "4.3.1"},
        "partitions": 6,
        "events": 30_000,
        "payload_bytes": 200,
        "repeat": 3,
        "cases": [
            _case("P0", "events/s", [{"value": v} for v in (40_000, 45_000, 42_000)]),
            _case("F0", "events/s", [{"value": v} for v in f0]),
            _case("P1", "events/s", [{"value": v, "details": {}} for v in p1]),
            _case("P3", "ms p99", p3_samples),
            _case("P7", "MB", [{"value": p7_small, "details": p7_details}]),
            _case("P9", "events/s", p9_samples),
        ],
    }


def _by_goal(document: dict[str, Any]) -> dict[tuple[str, str], goals.Verdict]:
    return {(v.goal.case, v.goal.source): v for v in goals.verdicts(document)}


def test_verdicts_compare_the_median_of_the_rounds_with_each_goal() -> None:
    v = _by_goal(results())

    assert v["P1", "value"].status == goals.MET  # median 16,000 >= 15,000
    assert (v["P1", "value"].median, v["P1", "value"].low, v["P1", "value"].high) == (
        16_000,
        15_500,
        17_000,
    )
    assert v["P1", "ratio:F0"].status == goals.MET  # 16,000 / 12,500 = 1.28 >= 1.2
    assert v["P1", "ratio:F0"].median == pytest.approx(1.28)
    # per-round pairs: 16,000/12,000, 15,500/13,000, 17,000/12,500
    assert v["P1", "ratio:F0"].low == pytest.approx(15_500 / 13_000)
    assert v["P1", "ratio:F0"].high == pytest.approx(17_000 / 12_500)
    assert v["P3", "detail:p50_ms"].status == goals.MET  # median 9 <= 10 (one round at 12)
    assert v["P3", "detail:p99_ms"].status == goals.MET  # median 45 <= 50
    assert "half of P1, this run" in v["P3", "detail:p99_ms"].note
    assert v["P7", "detail:big_rss_mb"].status == goals.MET
    assert v["P7", "detail:small_rss_mb"].status == goals.NOT_MET  # 383 MB as a trickle
    assert v["P7", "detail:small_rss_mb"].rounds == 1
    assert v["P9", "detail:ratio_to_raw"].status == goals.NOT_MET  # median 0.10 < 0.5
    assert v["P9", "detail:ratio_to_raw"].median == pytest.approx(0.10)


def test_a_goal_fails_when_the_median_is_just_past_its_limit() -> None:
    v = _by_goal(results(p1=(14_999, 20_000, 14_000), f0=(12_500,) * 3, p3_p50=(10.5, 10.5, 3)))

    assert v["P1", "value"].status == goals.NOT_MET  # median 14,999
    assert v["P1", "ratio:F0"].status == goals.NOT_MET  # 14,999 / 12,500 = 1.19992
    assert v["P3", "detail:p50_ms"].status == goals.NOT_MET  # median 10.5


def test_missing_cases_are_no_data_never_met() -> None:
    document = results()
    document["cases"] = [c for c in document["cases"] if c["id"] in ("P0", "P1")]

    v = _by_goal(document)

    assert v["P1", "value"].status == goals.MET
    assert v["P1", "ratio:F0"].status == goals.NO_DATA
    assert "F0" in v["P1", "ratio:F0"].note
    assert {v[k].status for k in v if k[0] in ("P3", "P7", "P9")} == {goals.NO_DATA}
    text = goals.render(list(v.values()))
    assert "1 of 1 goals with data met (6 without data)" in text


def test_a_case_whose_rounds_all_failed_is_no_data() -> None:
    document = results()
    document["cases"][2]["samples"] = []  # P1: every round raised

    v = _by_goal(document)

    assert v["P1", "value"].status == goals.NO_DATA
    assert v["P1", "value"].note == "no sample (see errors)"


def test_render_lists_every_goal_with_its_verdict() -> None:
    text = goals.render(goals.verdicts(results()))
    lines = text.splitlines()

    assert len(lines) == 2 + len(goals.GOALS) + 1  # header, rule, goals, summary
    assert "16,000" in lines[2] and ">= 15,000 events/s" in lines[2] and "met" in lines[2]
    assert "NOT MET" in lines[2 + 6]  # P9
    assert lines[-1] == "5 of 7 goals with data met (0 without data)"


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (plot.WIDTH_IN * plot.DPI, plot.HEIGHT_IN * plot.DPI)
        # not a blank canvas: bars, lines and text in more than a few colours
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 50


def test_the_picture_is_a_png_of_the_expected_size(tmp_path: Path) -> None:
    path = plot.draw(results(), tmp_path / "run.png")

    _check_png(path)


def test_the_picture_is_drawn_for_a_partial_run_without_latency_samples(tmp_path: Path) -> None:
    document = results(histograms=False)
    document["cases"] = [c for c in document["cases"] if c["id"] in ("P0", "P3", "P9")]

    _check_png(plot.draw(document, tmp_path / "partial.png"))


def test_draw_beside_writes_the_png_next_to_the_json(tmp_path: Path) -> None:
    json_path = tmp_path / "20261202T180000Z.json"

    assert plot.draw_beside(results(), json_path) == tmp_path / "20261202T180000Z.png"
    _check_png(tmp_path / "20261202T180000Z.png")


def test_python_m_bench_plot_redraws_from_a_results_file(tmp_path: Path) -> None:
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps(results()), encoding="utf-8")
    out = tmp_path / "again.png"

    done = subprocess.run(
        [sys.executable, "-m", "bench", "plot", str(json_path), "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"picture: {out}" in done.stdout
    assert "5 of 7 goals with data met" in done.stdout
    _check_png(out)


def test_p3_keeps_its_latencies_as_an_exact_histogram() -> None:
    from bench.cases.p3_latency import latency_histogram

    assert latency_histogram([12.0, 3.0, 12.0, 250.0, 3.0, 12.0]) == [[3, 2], [12, 3], [250, 1]]
    assert plot.latency_histograms(results()["cases"][3])[0][0][1] >= 1


def test_percentiles_of_the_histogram_are_those_of_the_samples() -> None:
    from bench.cases import _engine as eng
    from bench.cases.p3_latency import latency_histogram

    rng = random.Random(7)
    for n in (1, 2, 99, 100, 101, 2500):
        samples = [float(round(rng.expovariate(1 / 30))) for _ in range(n)]
        pairs = [(float(ms), c) for ms, c in latency_histogram(samples)]
        for q in (0, 50, 90, 99, 99.9, 100):
            assert plot.histogram_percentile(pairs, q) == eng.percentile(samples, q), (n, q)
