"""Batch handlers through the processor (worker/batching.py): when a batch runs, and each
event's outcome carried out on its own, durable before its ack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.unit.worker_fakes import (
    NOW_MS,
    TP,
    AckingLog,
    AckLog,
    Clock,
    DictStore,
    FakeDecoder,
    FakeProducer,
    encode_event,
    make_event,
    make_family,
    new_metrics,
    sample,
    settle,
    until,
)

from streams.core import headers as h
from streams.errors import Permanent, Retryable, Suppressed
from streams.jobs.batch import DONE, Batch, BatchContext, Outcome
from streams.jobs.registry import HandlerRegistry
from streams.worker.changelog import ChangelogWriter
from streams.worker.lanes import Lanes
from streams.worker.ledger import Ledger
from streams.worker.ordering import Entry, PartitionLog
from streams.worker.processor import Processor, ProcessorConfig

MAIN = "t.audit"
TIER_1S, DLQ = "t.audit.retry.1s", "t.audit.dlq"
EVENT_TYPE = "audit.recorded"

Decide = Callable[[list[Any], BatchContext], Any]


def all_done(events: list[Any], ctx: BatchContext) -> list[Outcome]:
    return [DONE for _ in events]


class Rig:
    """A processor whose EVENT_TYPE has a batch handler; ``decide`` makes its result."""

    def __init__(
        self,
        *,
        decide: Decide = all_done,
        max_events: int = 3,
        max_wait_ms: int = 1000,
        timeout_s: float = 5.0,
        hold: asyncio.Event | None = None,
        control: Any = None,
    ) -> None:
        self.clock = Clock()
        self.metrics = new_metrics()
        self.route = FakeProducer()
        self.changelog = FakeProducer()
        self.store = DictStore()
        self.writer = ChangelogWriter(
            producer=self.changelog, topic="app-audit.done-changelog", store=self.store
        )
        self.ledger = Ledger(
            writer=self.writer, store=self.store, ttl_ms=86_400_000, clock_ms=self.clock
        )
        self.ledger.assign({0, 1, 2, 3})
        self.calls: list[tuple[list[str], BatchContext]] = []
        self.decide = decide
        registry = HandlerRegistry()

        @registry.handler(EVENT_TYPE, batch=Batch(max_events=max_events, max_wait_ms=max_wait_ms))
        async def handle(events: list[Any], ctx: BatchContext) -> Any:
            self.calls.append(([e.envelope.event_id for e in events], ctx))
            if hold is not None:
                await hold.wait()
            return self.decide(events, ctx)

        self.processor = Processor(
            family=make_family(),
            config=ProcessorConfig(
                prefix="t.",
                handler_timeout_s=timeout_s,
                default_max_defer_ms=3_600_000,
                route_retry_backoff_s=0.01,
            ),
            decoder=FakeDecoder(),
            handlers=registry,
            producer=self.route,
            ledger=self.ledger,
            metrics=self.metrics,
            clock_ms=self.clock,
            rand=lambda: 0.5,
            control=control,
            monotonic_ms=self.clock,
        )
        self.acks = AckLog()
        self.logs: dict[Any, PartitionLog] = {}

    def entry(self, offset: int, *, event_id: str | None = None, partition: int = 0) -> Entry:
        tp = TP(MAIN, partition)
        plog = self.logs.setdefault(tp, AckingLog(tp))
        eid = event_id or f"e{partition}-{offset}"
        event = make_event(
            self.acks,
            offset,
            topic=MAIN,
            partition=partition,
            key=f"user-{offset % 2}".encode(),
            value=encode_event(eid, EVENT_TYPE),
            headers={h.EVENT_ID: eid, h.EVENT_TYPE: EVENT_TYPE},
        )
        return plog.add(event)

    async def feed(self, *entries: Entry) -> None:
        for entry in entries:
            await self.processor.process(entry)

    @property
    def batches(self) -> Any:
        return self.processor.batches

    def sent_ids(self, topic: str) -> list[str]:
        return [s.header_dict[h.EVENT_ID] for s in self.route.sent if s.topic == topic]

    def metric(self, name: str, **labels: str) -> float:
        return sample(self.metrics, name, family="audit", **labels)


@pytest.fixture
async def make_rig() -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rig = Rig(**kwargs)
        rig.writer.start()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.batches.stop()
        await rig.writer.stop()


async def test_full_batch_runs_once_each_outcome_on_its_own_acks_in_offset_order(
    make_rig: Callable[..., Rig],
) -> None:
    def decide(events: list[Any], ctx: BatchContext) -> list[Outcome]:
        return [DONE, Retryable("row locked"), DONE]

    r = make_rig(decide=decide)
    entries = [r.entry(i) for i in range(3)]
    await r.feed(*entries)
    await until(lambda: r.acks.offsets() == [0, 1, 2])
    assert [ids for ids, _ in r.calls] == [["e0-0", "e0-1", "e0-2"]]
    _, ctx = r.calls[0]
    assert [c.offset for c in ctx.contexts] == [0, 1, 2]
    assert (ctx.family, ctx.event_type) == ("audit", EVENT_TYPE)
    assert r.sent_ids(TIER_1S) == ["e0-1"], "only the retryable event reaches the tier"
    (sent,) = r.route.sent
    assert sent.header_dict[h.ERROR_MESSAGE] == "row locked"
    assert sent.header_dict[h.ATTEMPT] == "2"
    assert r.metric("streams_events_total", outcome="done") == 2
    assert r.metric("streams_events_total", outcome="retried") == 1
    assert r.metric("streams_batch_flushes_total", event_type=EVENT_TYPE, reason="full") == 1
    assert r.metric("streams_batch_size_events_sum", event_type=EVENT_TYPE) == 3
    assert len(r.batches) == 0


async def test_done_events_ack_only_once_their_done_markers_are_durable(
    make_rig: Callable[..., Rig],
) -> None:
    r = make_rig()
    r.changelog.auto = False
    await r.feed(*(r.entry(i) for i in range(3)))
    await until(lambda: len(r.changelog.sent) == 1)
    await settle()
    assert r.acks == [], "acked before the done-markers were durable"
    r.changelog.resolve_all()
    await until(lambda: r.acks.offsets() == [0, 1, 2])


async def test_a_partial_batch_runs_max_wait_ms_after_its_oldest_event(
    make_rig: Callable[..., Rig],
) -> None:
    r = make_rig(max_events=100, max_wait_ms=1000)
    await r.feed(r.entry(0))
    r.clock.advance(400)
    await r.feed(r.entry(1))
    await settle()
    r.clock.advance(599)  # 999 ms after the first
    r.batches.get(EVENT_TYPE).poke()
    await settle()
    assert r.calls == [] and len(r.batches) == 2
    r.clock.advance(1)
    r.batches.get(EVENT_TYPE).poke()
    await until(lambda: r.acks.offsets() == [0, 1])
    assert [ids for ids, _ in r.calls] == [["e0-0", "e0-1"]]
    assert r.metric("streams_batch_flushes_total", event_type=EVENT_TYPE, reason="wait") == 1


async def test_outcomes_by_event_id_and_every_kind_of_failure(
    make_rig: Callable[..., Rig],
) -> None:
    def decide(events: list[Any], ctx: BatchContext) -> dict[str, Outcome]:
        return {
            "e0-0": Permanent("no such account"),
            "e0-1": Suppressed("opted out"),
            "e0-2": ValueError("bug in the handler"),
        }

    r = make_rig(decide=decide)
    await r.feed(*(r.entry(i) for i in range(3)))
    await until(lambda: r.acks.offsets() == [0, 1, 2])
    assert r.sent_ids(DLQ) == ["e0-0"]
    assert r.sent_ids(TIER_1S) == ["e0-2"], "an unknown exception is retryable"
    assert r.metric("streams_events_total", outcome="suppressed") == 1
    assert r.metric("streams_events_total", outcome="done") == 0


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ([DONE, DONE], "batch handler returned 2 outcomes for 3 events"),
        ({"e0-0": DONE, "e0-1": DONE}, "batch handler returned no outcome for event e0-2"),
        (None, "batch handler returned a NoneType"),
    ],
)
async def test_a_wrong_result_retries_every_event_of_the_batch_never_done(
    make_rig: Callable[..., Rig], result: Any, reason: str
) -> None:
    r = make_rig(decide=lambda events, ctx: result)
    await r.feed(*(r.entry(i) for i in range(3)))
    await until(lambda: r.acks.offsets() == [0, 1, 2])
    assert sorted(r.sent_ids(TIER_1S)) == ["e0-0", "e0-1", "e0-2"]
    for sent in r.route.sent:
        assert reason in sent.header_dict[h.ERROR_MESSAGE]
        assert sent.header_dict[h.ERROR_CLASS] == "streams.jobs.batch.BatchResultError"
    assert r.metric("streams_events_total", outcome="done") == 0


@pytest.mark.parametrize(
    ("error", "topic"), [(Permanent("schema gone"), DLQ), (RuntimeError("db down"), TIER_1S)]
)
async def test_an_exception_of_the_whole_handler_is_each_events_failure(
    make_rig: Callable[..., Rig], error: Exception, topic: str
) -> None:
    def decide(events: list[Any], ctx: BatchContext) -> Any:
        raise error

    r = make_rig(decide=decide)
    await r.feed(*(r.entry(i) for i in range(3)))
    await until(lambda: r.acks.offsets() == [0, 1, 2])
    assert sorted(r.sent_ids(topic)) == ["e0-0", "e0-1", "e0-2"], "each event routed"
    assert len(r.route.sent) == 3


async def test_a_batch_past_the_handler_timeout_retries_each_event(
    make_rig: Callable[..., Rig],
) -> None:
    r = make_rig(timeout_s=0.05, hold=asyncio.Event())  # the hold never opens
    await r.feed(*(r.entry(i) for i in range(3)))
    await until(lambda: r.acks.offsets() == [0, 1, 2])
    assert sorted(r.sent_ids(TIER_1S)) == ["e0-0", "e0-1", "e0-2"]
    assert "batch handler timed out after 0.05s" in r.route.sent[0].header_dict[h.ERROR_MESSAGE]


async def test_an_event_id_twice_runs_once_and_its_twin_is_a_duplicate(
    make_rig: Callable[..., Rig],
) -> None:
    r = make_rig()
    await r.feed(r.entry(0, event_id="same"), r.entry(1, event_id="same"), r.entry(2))
    await until(lambda: len(r.calls) == 1)
    r.clock.advance(1000)  # the twin waits for the next batch
    r.batches.get(EVENT_TYPE).poke()
    await until(lambda: r.acks.offsets() == [0, 1, 2])
    assert [ids for ids, _ in r.calls] == [["same", "e0-2"]], "the twin waited, then was seen"
    assert r.metric("streams_duplicates_skipped_total") == 1
    # an event already done is skipped before it enters a batch
    await r.feed(r.entry(3, event_id="same"))
    assert r.acks.offsets() == [0, 1, 2, 3] and len(r.batches) == 0
    assert r.metric("streams_duplicates_skipped_total") == 2


async def test_revoke_drops_waiting_events_unfinished(make_rig: Callable[..., Rig]) -> None:
    r = make_rig(max_events=100)
    await r.feed(r.entry(0, partition=0), r.entry(0, partition=1))
    revoked = TP(MAIN, 0)
    r.logs[revoked].stopping = True
    assert r.batches.drop({revoked}) == 1
    r.clock.advance(1000)
    r.batches.get(EVENT_TYPE).poke()
    await until(lambda: r.acks == [(MAIN, 1, 0)])
    assert [ids for ids, _ in r.calls] == [["e1-0"]]
    assert len(r.logs[revoked]) == 1, "the revoked partition's event stays unfinished"


async def test_a_batch_past_the_drain_deadline_is_cancelled_events_still_owned_run_again(
    make_rig: Callable[..., Rig],
) -> None:
    hold = asyncio.Event()
    r = make_rig(max_events=2, hold=hold)
    await r.feed(r.entry(0, partition=0), r.entry(0, partition=1))
    await until(lambda: len(r.calls) == 1)
    revoked = TP(MAIN, 0)
    r.logs[revoked].stopping = True
    assert not await r.batches.wait_idle({revoked}, 0.02)
    assert await r.batches.wait_idle({TP(MAIN, 3)}, 0.02), "holds nothing of partition 3"
    assert r.batches.cancel({revoked}) == 1
    await settle()
    hold.set()
    r.clock.advance(1000)  # the event put back is due by its first arrival
    r.batches.get(EVENT_TYPE).poke()
    await until(lambda: r.acks == [(MAIN, 1, 0)])
    assert [ids for ids, _ in r.calls] == [["e0-0", "e1-0"], ["e1-0"]]
    assert len(r.logs[revoked]) == 1
    assert r.route.sent == [], "a cancelled batch is not a failure"


async def test_one_keys_events_reach_the_handler_in_offset_order_through_the_lanes(
    make_rig: Callable[..., Rig],
) -> None:
    r = make_rig(max_events=8)
    lanes = Lanes(r.processor, concurrency=4, on_in_flight=r.metrics.in_flight.labels("audit"))
    try:
        lanes.submit([r.entry(i) for i in range(8)])  # keys user-0 / user-1 alternate
        await until(lambda: r.acks.offsets() == list(range(8)))
    finally:
        await lanes.stop()
    ((ids, ctx),) = r.calls
    by_key: dict[bytes, list[int]] = {}
    for c in ctx.contexts:
        by_key.setdefault(f"user-{c.offset % 2}".encode(), []).append(c.offset)
    assert all(offsets == sorted(offsets) for offsets in by_key.values()), by_key
    assert sorted(ids) == sorted(f"e0-{i}" for i in range(8))


def control_view() -> Any:
    from streams.control.reader import ControlView
    from streams.worker.control import WorkerControl

    view = ControlView(lambda: NOW_MS)
    return WorkerControl(view=view, follower=None, topics_of={}, clock_ms=lambda: NOW_MS)


def cancel(control: Any, event_id: str) -> None:
    from streams.control.model import Command

    command = Command(kind="cancel", target=event_id, issued_at_ms=1)
    control.view.apply(f"cancel/{event_id}".encode(), command.encode())


async def test_cancels_apply_per_event_while_waiting_and_while_running(
    make_rig: Callable[..., Rig],
) -> None:
    control = control_view()

    def decide(events: list[Any], ctx: BatchContext) -> list[Outcome]:
        ctx.contexts[0].cancel.set("told to stop")  # as a cancel arriving mid-run
        return [Retryable("interrupted"), DONE]

    r = make_rig(decide=decide, control=control, max_events=100)
    await r.feed(*(r.entry(i) for i in range(3)))
    cancel(control, "e0-1")  # while it waits for its batch
    r.clock.advance(1000)
    r.batches.get(EVENT_TYPE).poke()
    await until(lambda: r.acks.offsets() == [0, 1, 2])
    assert [ids for ids, _ in r.calls] == [["e0-0", "e0-2"]], "a cancelled event never runs"
    assert r.metric("streams_events_total", outcome="cancelled") == 2
    assert r.metric("streams_events_total", outcome="done") == 1
    assert r.route.sent == [], "a failure because of its cancel is not retried"
