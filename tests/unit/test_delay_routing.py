"""Delayed events, pure parts: the due time and its checks, the tier a delayed record is
routed to, and a tier's hold-or-hop dispatch (fake producer, fake clock)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.worker_fakes import AckingLog

from streams.catalog import load_catalog
from streams.core import headers as h
from streams.errors import InvalidPayload
from streams.publish.prepare import MAX_DELAY_MS, Preparer, due_at
from streams.serde import SchemaStore
from streams.worker.delays import HopOrAdmit

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_780_000_000_000
CLAIM = {"subject_id": "s", "actor_id": "a"}


def test_due_time_from_delay_or_instant() -> None:
    assert due_at("x.y", None, None, NOW) is None
    assert due_at("x.y", None, 5, NOW) == NOW + 5000
    assert due_at("x.y", None, 0.0004, NOW) == NOW + 1  # rounded up: never early
    at = datetime.fromtimestamp(NOW / 1000, UTC) + timedelta(hours=1)
    assert due_at("x.y", at, None, NOW) == NOW + 3_600_000
    assert due_at("x.y", at - timedelta(days=1), None, NOW) is None  # past: runs at once
    assert due_at("x.y", None, MAX_DELAY_MS / 1000, NOW) == NOW + MAX_DELAY_MS


@pytest.mark.parametrize(
    ("not_before", "delay_s", "message"),
    [
        (None, -1, "delay_s: must be a number of seconds >= 0"),
        (None, float("nan"), "delay_s: must be a number of seconds >= 0"),
        (None, True, "delay_s: must be a number of seconds >= 0"),
        (None, 30 * 86400 + 1, "delay_s: must be at most 30 days ahead"),
        (datetime(2030, 1, 1), None, "not_before: must be a time-zone-aware datetime"),
        (datetime.now(UTC), 1, "delay_s: give not_before or delay_s, not both"),
    ],
)
def test_bad_delays_name_the_field(not_before: Any, delay_s: Any, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        due_at("audit.claim_submitted", not_before, delay_s, NOW)


def test_a_delayed_event_goes_to_the_tier_that_fits_with_its_due_time() -> None:
    prep = Preparer(
        load_catalog(ROOT / "topics.yaml"),
        SchemaStore.load(ROOT / "schemas"),
        topic_prefix="t.",
        producer_name="tests",
    )
    # audit tiers: 1s, 10s, 1m, 10m, 1h
    cases = {5: "t.audit.retry.10s", 600: "t.audit.retry.10m", 86400: "t.audit.retry.1h"}
    for delay_s, topic in cases.items():
        rec = prep.record("audit.claim_submitted", CLAIM, delay_s=delay_s, now_ms=NOW)
        assert rec[0] == topic
        assert dict(rec[3])[h.DUE_AT_MS] == str(NOW + delay_s * 1000).encode()
    plain = prep.record("audit.claim_submitted", CLAIM, now_ms=NOW)
    assert plain[0] == "t.audit" and h.DUE_AT_MS not in dict(plain[3])


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def send(self, *args: Any) -> Any:
        self.sent.append(args)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _entry(due_ms: int) -> Any:
    from streams.worker.ordering import Entry

    acked: list[int] = []
    message = SimpleNamespace(
        topic="t.audit.retry.1h",
        partition=2,
        offset=7,
        key=b"k",
        value=b"v",
        headers=[(h.DUE_AT_MS, str(due_ms).encode())],
        timestamp=0,
        ack=lambda: acked.append(7),
    )
    log = AckingLog("tp")
    entry = log.add(message)
    assert isinstance(entry, Entry)
    return entry, acked


async def test_an_early_record_hops_unchanged_and_a_due_one_is_admitted() -> None:
    producer, admitted = _Producer(), []

    async def admit(entry: Any) -> None:
        admitted.append(entry)

    clock = [NOW]
    hop = HopOrAdmit(admit, producer=producer, clock_ms=lambda: clock[0], skew_margin_ms=20)
    early, acked = _entry(NOW + 3_600_000)
    await hop(early)
    assert producer.sent == [
        ("t.audit.retry.1h", b"k", b"v", 2, None, [(h.DUE_AT_MS, str(NOW + 3_600_000).encode())])
    ]
    assert acked == [7] and not admitted  # the copy is acknowledged, then the original acked
    clock[0] = NOW + 3_600_000 + 20  # due (margin included)
    due, acked = _entry(NOW + 3_600_000)
    await hop(due)
    assert admitted == [due] and len(producer.sent) == 1 and not acked
    cancelled, acked = _entry(NOW + 7_200_000)  # far from due, but expedited (a cancel)
    cancelled.expedited = True
    await hop(cancelled)
    assert admitted == [due, cancelled] and len(producer.sent) == 1 and not acked
