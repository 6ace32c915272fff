"""Runtime admission: offsets are admitted strictly in sequence (no faust app started)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.app.runtime import Runtime
from streams.catalog import load_catalog
from streams.jobs.registry import HandlerRegistry
from streams.metrics import Metrics
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Runtime, list[Any]]:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9",  # never contacted: the app is not started
        topic_prefix="t.",
        app_id="seq-test",
        replication_factor_override=1,
        home=tmp_path,
    )
    rt = Runtime(
        settings=settings,
        catalog=load_catalog(REPO / "topics.yaml"),
        registry=HandlerRegistry(),
        decoder=object(),  # type: ignore[arg-type]
        metrics=Metrics.create(CollectorRegistry()),
        families=["audit"],
    )
    seeks: list[Any] = []

    async def fake_seek(offsets: dict[Any, int]) -> None:
        seeks.append(dict(offsets))

    monkeypatch.setattr(rt, "_seek", fake_seek)
    return rt, seeks


async def test_records_are_admitted_only_in_sequence(runtime: tuple[Runtime, list[Any]]) -> None:
    rt, seeks = runtime
    tp = TP("t.audit", 0)
    rt._active = {tp}
    rt._positioned = True
    rt._expected[tp] = 5
    assert rt._log_for(tp, 5) is not None
    assert rt._expected[tp] == 6
    # a record beyond the next expected offset: not admitted, the partition seeks back
    assert rt._log_for(tp, 8) is None
    await asyncio.sleep(0)
    assert seeks == [{tp: 6}]
    assert rt._log_for(tp, 9) is None
    await asyncio.sleep(0)
    assert seeks == [{tp: 6}], "seeks again within the retry interval"
    assert rt._log_for(tp, 5) is None, "a re-delivered record was admitted twice"
    assert rt._log_for(tp, 6) is not None  # back in sequence
    assert tp not in rt._resyncing
    assert rt.ready()["partitions_in_sequence"]


async def test_nothing_is_admitted_before_positions_are_set(
    runtime: tuple[Runtime, list[Any]],
) -> None:
    rt, _ = runtime
    tp = TP("t.audit", 1)
    rt._active = {tp}
    assert rt._log_for(tp, 0) is None  # assigned, not yet sought to its committed offset
    rt._positioned = True
    rt._expected[tp] = 0
    assert rt._log_for(tp, 0) is not None
    rt.draining = True
    assert rt._log_for(tp, 1) is None
    rt.draining = False
    assert rt._log_for(TP("t.audit", 2), 0) is None  # not ours
