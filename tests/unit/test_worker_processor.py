"""Processor.process: decode -> idempotency -> gate -> handler -> a durable outcome."""

from __future__ import annotations

import asyncio
import contextlib
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

from streams.catalog import CircuitBreakerSpec
from streams.core import headers as h
from streams.core.idempotency import RouteMarkers, event_hash
from streams.errors import Deferred, Permanent, Rejected, Retryable
from streams.jobs.base import DependencyGuard, JobContext, no_guard
from streams.jobs.registry import HandlerRegistry
from streams.worker.breakers import Breakers
from streams.worker.changelog import ChangelogWriter
from streams.worker.lanes import Lanes
from streams.worker.ledger import Ledger
from streams.worker.ordering import Entry, PartitionLog
from streams.worker.processor import Processor, ProcessorConfig

MAIN = "t.audit"
TIER_1S, TIER_10S, DLQ = "t.audit.retry.1s", "t.audit.retry.10s", "t.audit.dlq"
EVENT_TYPE = "audit.recorded"


class Gate:
    """A rate gate that raises what it is told to."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.checked = 0

    def check(self, event: Any, entry: Entry, headers: Any) -> None:
        self.checked += 1
        if self.error is not None:
            raise self.error


class Rig:
    def __init__(
        self,
        *,
        handler: Callable[..., Any] | None,
        ledger: bool = True,
        route_auto: bool = True,
        changelog_auto: bool = True,
        timeout_s: float = 1.0,
        gate: Gate | None = None,
        on_dependency_timeout: Callable[[str], None] = lambda name: None,
        guard: DependencyGuard = no_guard,
        decoder: Any = None,
        control: Any = None,
        status: Any = None,
    ) -> None:
        self.clock = Clock()
        self.metrics = new_metrics()
        self.route = FakeProducer(auto=route_auto)
        self.changelog = FakeProducer(auto=changelog_auto)
        self.store = DictStore()
        self.writer = ChangelogWriter(
            producer=self.changelog, topic="app-audit.done-changelog", store=self.store
        )
        self.ledger: Ledger | None = None
        if ledger:
            self.ledger = Ledger(
                writer=self.writer, store=self.store, ttl_ms=86_400_000, clock_ms=self.clock
            )
            self.ledger.assign({0, 1, 2, 3})
        registry = HandlerRegistry()
        self.calls: list[tuple[Any, JobContext]] = []
        if handler is not None:

            async def recording(event: Any, ctx: JobContext) -> None:
                self.calls.append((event, ctx))
                await handler(event, ctx)

            registry.register(EVENT_TYPE, recording)
        self.processor = Processor(
            family=make_family(),
            config=ProcessorConfig(
                prefix="t.",
                handler_timeout_s=timeout_s,
                default_max_defer_ms=3_600_000,
                route_retry_backoff_s=0.01,
            ),
            decoder=decoder or FakeDecoder(),
            handlers=registry,
            producer=self.route,
            ledger=self.ledger,
            metrics=self.metrics,
            clock_ms=self.clock,
            guard=guard,
            on_dependency_timeout=on_dependency_timeout,
            gate=gate,
            rand=lambda: 0.5,
            control=control,
            status=status,
        )
        self.acks = AckLog()
        self.logs: dict[Any, PartitionLog] = {}

    def entry(
        self,
        offset: int = 7,
        *,
        event_id: str = "e1",
        topic: str = MAIN,
        partition: int = 2,
        headers: dict[str, str] | None = None,
        key: bytes | None = b"user-1",
        value: bytes | None = None,
    ) -> Entry:
        tp = TP(topic, partition)
        plog = self.logs.setdefault(tp, AckingLog(tp))
        if value is None:
            value = encode_event(event_id, EVENT_TYPE)
        base = {h.EVENT_ID: event_id, h.EVENT_TYPE: EVENT_TYPE}
        event = make_event(
            self.acks,
            offset,
            topic=topic,
            partition=partition,
            key=key,
            value=value,
            headers={**base, **(headers or {})},
        )
        return plog.add(event)

    async def durable(self) -> None:
        """Wait for the markers written so far (done and route markers) to be durable."""
        if self.ledger is not None:
            assert await self.writer.flush(1.0)

    def outcome(self, outcome: str) -> float:
        return sample(self.metrics, "streams_events_total", family="audit", outcome=outcome)

    def dead_letters(self, reason: str) -> float:
        return sample(self.metrics, "streams_dead_letters_total", family="audit", reason=reason)


@pytest.fixture
async def rig_factory() -> AsyncIterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rig = Rig(**kwargs)
        rig.writer.start()
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.writer.stop()


async def ok(event: Any, ctx: JobContext) -> None:
    return None


def raising(error: BaseException) -> Callable[..., Any]:
    async def handler(event: Any, ctx: JobContext) -> None:
        raise error

    return handler


async def test_success_finishes_the_entry_only_after_the_ledger_flush(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(handler=ok, changelog_auto=False)
    entry = r.entry()
    await r.processor.process(entry)
    assert len(r.calls) == 1
    event, ctx = r.calls[0]
    assert event.envelope.event_id == "e1"
    assert (ctx.event_id, ctx.event_type, ctx.family) == ("e1", EVENT_TYPE, "audit")
    assert (ctx.topic, ctx.partition, ctx.offset, ctx.attempt) == (MAIN, 2, 7, 1)
    await until(lambda: len(r.changelog.sent) == 1)
    await settle()
    assert r.acks == []  # done, but the done-marker is not durable yet
    assert r.changelog.sent[0].partition == 2  # the changelog partition of the event
    r.changelog.resolve_all()
    assert await r.writer.flush(1.0)
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]
    assert r.route.sent == []
    assert r.outcome("done") == 1
    assert sample(r.metrics, "streams_end_to_end_latency_seconds_count", family="audit") == 1


async def test_without_a_ledger_success_finishes_at_once(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(handler=ok, ledger=False)
    await r.processor.process(r.entry())
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]


async def test_a_duplicate_is_skipped_and_finished_without_running_the_handler(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(handler=ok)
    await r.processor.process(r.entry(7, event_id="e1"))
    await r.processor.process(r.entry(8, event_id="e1"))  # the same event again
    await r.processor.process(r.entry(0, event_id="e1", topic=TIER_1S))  # and from a tier
    assert await r.writer.flush(1.0)
    assert len(r.calls) == 1
    assert sorted(r.acks) == [(MAIN, 2, 7), (MAIN, 2, 8), (TIER_1S, 2, 0)]
    assert r.outcome("duplicate") == 2
    assert sample(r.metrics, "streams_duplicates_skipped_total", family="audit") == 2
    assert r.route.sent == []


async def test_a_duplicate_waits_for_the_original_in_offset_order(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(handler=ok, changelog_auto=False)
    await r.processor.process(r.entry(7, event_id="e1"))
    await r.processor.process(r.entry(8, event_id="e1"))
    assert r.acks == []  # 8 is finished but 7's marker is not durable: nothing passes 7
    await until(lambda: len(r.changelog.sent) == 1)
    r.changelog.resolve_all()
    assert await r.writer.flush(1.0)
    assert r.acks.offsets() == [7, 8]


async def test_the_same_id_on_another_partition_is_not_a_duplicate(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(handler=ok)
    await r.processor.process(r.entry(7, event_id="e1", partition=2))
    await r.processor.process(r.entry(7, event_id="e1", partition=3))
    assert len(r.calls) == 2


@pytest.mark.parametrize(
    "value",
    [b"\xff\x00\xfe not json", b"", b'{"no": "envelope"}'],
    ids=["garbage", "empty", "wrong-shape"],
)
async def test_an_undecodable_record_goes_to_the_dlq_byte_identical(
    rig_factory: Callable[..., Rig], value: bytes
) -> None:
    r = rig_factory(handler=ok)
    key = b"\x00\xffraw-key\x80"
    await r.processor.process(r.entry(7, key=key, value=value, headers={"x-trace": "abc"}))
    assert r.calls == []
    (sent,) = r.route.sent
    assert sent.topic == DLQ
    assert sent.key == key
    assert sent.value == value
    assert sent.partition == 2
    headers = sent.header_dict
    assert headers[h.DLQ_REASON] == "undecodable"
    assert headers[h.ORIGINAL_TOPIC] == MAIN
    assert headers[h.ORIGINAL_PARTITION] == "2"
    assert headers[h.ORIGINAL_OFFSET] == "7"
    assert headers[h.ORIGINAL_TIMESTAMP_MS] == str(NOW_MS)
    assert headers["x-trace"] == "abc"  # foreign headers travel along
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]
    assert r.dead_letters("undecodable") == 1
    assert r.outcome("dead_lettered") == 1


async def test_a_decoder_bug_is_routed_as_undecodable(rig_factory: Callable[..., Rig]) -> None:
    class BrokenDecoder:
        def decode_event(self, data: bytes) -> Any:
            raise KeyError("fingerprint table")

    r = rig_factory(handler=ok, decoder=BrokenDecoder())
    await r.processor.process(r.entry())
    (sent,) = r.route.sent
    assert sent.topic == DLQ
    assert sent.header_dict[h.DLQ_REASON] == "undecodable"
    assert "decoder failed" in sent.header_dict[h.ERROR_MESSAGE]
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]


@pytest.mark.parametrize("partition", [0, 3])
async def test_retryable_goes_to_the_first_tier_with_attempt_2_and_a_due_time(
    rig_factory: Callable[..., Rig], partition: int
) -> None:
    r = rig_factory(handler=raising(Retryable("smtp 451 try later")))
    value = encode_event("e1", EVENT_TYPE)
    await r.processor.process(r.entry(7, partition=partition, value=value))
    (sent,) = r.route.sent
    assert sent.topic == TIER_1S
    assert sent.partition == partition  # the same partition number, explicitly
    assert (sent.key, sent.value) == (b"user-1", value)
    headers = sent.header_dict
    assert headers[h.ATTEMPT] == "2"
    assert headers[h.DUE_AT_MS] == str(NOW_MS + 1_000)  # no jitter in this family
    assert headers[h.ERROR_CLASS] == "streams.errors.Retryable"
    assert headers[h.EVENT_ID] == "e1"
    assert h.DLQ_REASON not in headers
    await r.durable()
    assert r.acks == [(MAIN, partition, 7)]
    assert r.ledger is not None and not r.ledger.seen(partition, event_hash("e1"))  # not done
    assert r.ledger.seen(partition, RouteMarkers().of(MAIN, 7))  # but routed
    assert sample(r.metrics, "streams_retries_total", family="audit", tier=TIER_1S) == 1
    assert r.outcome("retried") == 1


@pytest.mark.parametrize("failure", [Retryable("later"), Permanent("never")])
async def test_a_redelivered_routed_record_is_acked_without_a_second_copy(
    rig_factory: Callable[..., Rig], failure: Exception
) -> None:
    """After a rebalance the next owner may re-read a record the last one routed (its offset
    was not committed yet): its route marker, durable before the ack, stops a second copy."""
    r = rig_factory(handler=raising(failure))
    await r.processor.process(r.entry(7))
    await r.durable()
    assert len(r.route.sent) == 1 and r.acks == [(MAIN, 2, 7)]
    r.logs.clear()  # the next owner's log of the partition
    await r.processor.process(r.entry(7))  # the same record again
    await r.processor.process(r.entry(8, event_id="e2"))  # a new record still fails
    await r.durable()
    assert len(r.calls) == 2, "the redelivered record ran its handler again"
    assert [s.header_dict[h.ORIGINAL_OFFSET] for s in r.route.sent] == ["7", "8"]
    assert r.acks == [(MAIN, 2, 7), (MAIN, 2, 7), (MAIN, 2, 8)]
    assert r.outcome("duplicate") == 1


def test_route_markers_of_one_topic_never_collide_and_differ_across_topics() -> None:
    markers = RouteMarkers()
    main = {markers.of(MAIN, offset) for offset in range(100_000)}
    assert len(main) == 100_000
    assert not main & {markers.of(TIER_1S, offset) for offset in range(100_000)}
    assert markers.of(MAIN, 2**62) != markers.of(MAIN, 0)
    assert all(-(2**63) <= m < 2**63 for m in main)


async def test_a_retry_tier_failure_climbs_the_ladder_keeping_the_origin(
    rig_factory: Callable[..., Rig],
) -> None:
    r = rig_factory(handler=raising(RuntimeError("boom")))
    origin = {
        h.ATTEMPT: "2",
        h.ORIGINAL_TOPIC: MAIN,
        h.ORIGINAL_PARTITION: "2",
        h.ORIGINAL_OFFSET: "7",
        h.DUE_AT_MS: str(NOW_MS - 5),
    }
    await r.processor.process(r.entry(0, topic=TIER_1S, headers=origin))
    assert r.calls[0][1].attempt == 2
    (sent,) = r.route.sent
    assert sent.topic == TIER_10S
    headers = sent.header_dict
    assert headers[h.ATTEMPT] == "3"
    assert headers[h.DUE_AT_MS] == str(NOW_MS + 10_000)
    assert headers[h.ORIGINAL_TOPIC] == MAIN
    assert headers[h.ORIGINAL_OFFSET] == "7"
    await r.durable()
    assert r.acks == [(TIER_1S, 2, 0)]


async def test_the_last_attempt_goes_to_the_dlq_exhausted(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(handler=raising(Retryable("still down")))
    await r.processor.process(r.entry(0, topic=TIER_10S, headers={h.ATTEMPT: "3"}))
    (sent,) = r.route.sent
    assert sent.topic == DLQ
    assert sent.header_dict[h.DLQ_REASON] == "exhausted"
    assert r.dead_letters("exhausted") == 1


async def test_permanent_goes_to_the_dlq(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(handler=raising(Permanent("550 mailbox unavailable")))
    await r.processor.process(r.entry())
    (sent,) = r.route.sent
    assert (sent.topic, sent.partition) == (DLQ, 2)
    assert sent.header_dict[h.DLQ_REASON] == "permanent"
    assert sent.header_dict[h.ERROR_CLASS] == "streams.errors.Permanent"
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]
    assert r.dead_letters("permanent") == 1
    assert r.ledger is not None and not r.ledger.seen(2, event_hash("e1"))  # not done


async def test_a_handler_timeout_goes_to_the_retry_tier(rig_factory: Callable[..., Rig]) -> None:
    cancelled: list[bool] = []

    async def hangs(event: Any, ctx: JobContext) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    r = rig_factory(handler=hangs, timeout_s=0.05)
    started = asyncio.get_running_loop().time()
    await r.processor.process(r.entry())
    assert asyncio.get_running_loop().time() - started < 1.0
    assert cancelled == [True]
    task = asyncio.current_task()  # the lanes' worker: the deadline cancelled it
    assert task is not None and task.cancelling() == 0  # ... and took it back
    (sent,) = r.route.sent
    assert sent.topic == TIER_1S
    assert sent.header_dict[h.ATTEMPT] == "2"
    assert "handler timed out" in sent.header_dict[h.ERROR_MESSAGE]
    assert sent.header_dict[h.ERROR_CLASS] == "streams.errors.Retryable"
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]
    assert (
        sample(
            r.metrics,
            "streams_handler_duration_seconds_count",
            family="audit",
            event_type=EVENT_TYPE,
        )
        == 1
    )


async def test_a_timeout_in_the_worker_pool_leaves_the_worker_clean_for_the_next_record(
    rig_factory: Callable[..., Rig],
) -> None:
    async def first_hangs(event: Any, ctx: JobContext) -> None:
        if ctx.offset == 0:
            await asyncio.sleep(10)

    r = rig_factory(handler=first_hangs, timeout_s=0.05, ledger=False)
    lanes = Lanes(r.processor, concurrency=1, on_in_flight=r.metrics.in_flight.labels("audit"))
    try:
        lanes.submit([r.entry(0, event_id="a"), r.entry(1, event_id="b")])  # one key: a chain
        await until(lambda: r.acks.offsets() == [0, 1])
        (worker,) = [t for t in asyncio.all_tasks() if t.get_name().startswith("lanes.audit.")]
        assert worker.cancelling() == 0
        assert [s.topic for s in r.route.sent] == [TIER_1S]
        assert r.outcome("done") == 1
    finally:
        await lanes.stop()


async def test_a_handler_that_ignores_its_deadline_is_done_and_uncancelled(
    rig_factory: Callable[..., Rig],
) -> None:
    async def stubborn(event: Any, ctx: JobContext) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # swallows the deadline's cancel
            await asyncio.sleep(10)

    r = rig_factory(handler=stubborn, timeout_s=0.02, ledger=False)
    await r.processor.process(r.entry())
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert r.route.sent == []
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]


async def test_no_handler_goes_to_the_dlq_as_permanent(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(handler=None)
    await r.processor.process(r.entry())
    (sent,) = r.route.sent
    assert sent.topic == DLQ
    assert sent.header_dict[h.DLQ_REASON] == "permanent"
    assert sent.header_dict[h.ERROR_CLASS] == "streams.worker.processor.NoHandler"
    assert EVENT_TYPE in sent.header_dict[h.ERROR_MESSAGE]
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]


async def test_a_gate_deferral_uses_no_attempt(rig_factory: Callable[..., Rig]) -> None:
    gate = Gate(
        Deferred(2.0, "rate limit per_user exceeded", max_defer_s=60.0, kind="rate_limited")
    )
    r = rig_factory(handler=ok, gate=gate)
    await r.processor.process(r.entry())
    assert r.calls == []
    (sent,) = r.route.sent
    assert sent.topic == TIER_10S  # the tier that fits a 2 s wait
    assert sent.partition == 2
    headers = sent.header_dict
    assert headers[h.ATTEMPT] == "1"
    assert headers[h.DEFERRALS] == "1"
    assert headers[h.DUE_AT_MS] == str(NOW_MS + 2_000)
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]
    assert sample(r.metrics, "streams_deferrals_total", family="audit", reason="rate_limited") == 1
    assert r.outcome("deferred") == 1


async def test_a_gate_rejection_goes_to_the_dlq(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(handler=ok, gate=Gate(Rejected("rate limit per_user exceeded")))
    await r.processor.process(r.entry())
    assert r.calls == []
    (sent,) = r.route.sent
    assert (sent.topic, sent.header_dict[h.DLQ_REASON]) == (DLQ, "rejected")


async def test_a_duplicate_spends_no_rate_limit_token(rig_factory: Callable[..., Rig]) -> None:
    gate = Gate()
    r = rig_factory(handler=ok, gate=gate)
    await r.processor.process(r.entry(7))
    await r.processor.process(r.entry(8))
    assert gate.checked == 1


@pytest.mark.parametrize("how", ["future fails", "send raises"])
async def test_a_producer_failure_is_retried_and_the_entry_waits_for_success(
    rig_factory: Callable[..., Rig], how: str
) -> None:
    r = rig_factory(handler=raising(Permanent("bad address")), route_auto=False)
    task = asyncio.get_running_loop().create_task(r.processor.process(r.entry()))
    if how == "send raises":
        r.route.raise_on_send.append(RuntimeError("queue full"))
    else:
        await until(lambda: len(r.route.sent) == 1)
        r.route.fail_all(RuntimeError("NotEnoughReplicas"))
    await until(lambda: len(r.route.pending()) == 1)  # sent again
    await settle()
    assert r.acks == []
    assert not task.done()
    r.route.resolve_all()
    await asyncio.wait_for(task, 1.0)
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]
    assert r.route.calls == 2
    assert {(s.topic, s.partition) for s in r.route.sent} == {(DLQ, 2)}
    assert sample(r.metrics, "streams_route_failures_total", family="audit") == 1
    assert r.dead_letters("permanent") == 1  # counted once, when durable


async def _revoked_while_sending(rig_factory: Callable[..., Rig]) -> tuple[Rig, Any]:
    """A retry send in flight whose partition is then revoked: (rig, processing task)."""
    r = rig_factory(handler=raising(Retryable("down")), route_auto=False)
    entry = r.entry()
    task = asyncio.get_running_loop().create_task(r.processor.process(entry))
    await until(lambda: len(r.route.sent) == 1)
    entry.log.close()  # revoked while the send is in flight
    return r, task


async def test_a_revoke_during_a_failing_send_leaves_the_entry_unacked(
    rig_factory: Callable[..., Rig],
) -> None:
    r, task = await _revoked_while_sending(rig_factory)
    r.route.fail_all(RuntimeError("broker gone"))
    await asyncio.wait_for(task, 1.0)  # gives up: the next owner retries
    await asyncio.sleep(0.05)
    assert r.route.calls == 1
    assert r.acks == []
    assert r.outcome("retried") == 0


async def test_a_revoke_before_the_broker_acknowledged_leaves_the_entry_unacked(
    rig_factory: Callable[..., Rig],
) -> None:
    r, task = await _revoked_while_sending(rig_factory)
    r.route.resolve_all()
    await asyncio.wait_for(task, 1.0)
    assert r.acks == []


async def test_nothing_is_sent_for_an_already_closed_log(rig_factory: Callable[..., Rig]) -> None:
    r = rig_factory(handler=raising(Retryable("down")))
    entry = r.entry()
    entry.log.close()
    await r.processor.process(entry)
    assert r.route.calls == 0
    assert r.acks == []


async def test_cancellation_passes_through_and_leaves_the_entry_unacked(
    rig_factory: Callable[..., Rig],
) -> None:
    async def hangs(event: Any, ctx: JobContext) -> None:
        await asyncio.sleep(10)

    r = rig_factory(handler=hangs)
    task = asyncio.get_running_loop().create_task(r.processor.process(r.entry()))
    await until(lambda: len(r.calls) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert r.route.sent == []
    assert r.acks == []


async def test_the_guard_is_the_handlers_dependency(rig_factory: Callable[..., Rig]) -> None:
    policy = CircuitBreakerSpec.model_validate({"failure_threshold": 2, "cooldown": "30s"}).policy()
    metrics = new_metrics()
    breakers = Breakers(lambda name: policy, metrics, Clock())

    async def calls_smtp(event: Any, ctx: JobContext) -> None:
        async with ctx.dependency("smtp:relay:25"):
            raise ConnectionRefusedError("relay down")

    r = rig_factory(handler=calls_smtp, guard=breakers.guard)
    for offset, event_id in enumerate(["a", "b", "c"]):
        await r.processor.process(r.entry(offset, event_id=event_id))
    topics = [s.header_dict for s in r.route.sent]
    assert [t[h.ATTEMPT] for t in topics] == ["2", "2", "1"]  # the 3rd was deferred
    assert topics[2][h.ERROR_CLASS] == "streams.errors.Deferred"
    assert "circuit smtp:relay:25 open" in topics[2][h.ERROR_MESSAGE]
    assert sample(r.metrics, "streams_deferrals_total", family="audit", reason="circuit_open") == 1
    await r.durable()
    assert r.acks.offsets() == [0, 1, 2]


async def test_handler_timeouts_inside_a_dependency_open_its_circuit(
    rig_factory: Callable[..., Rig],
) -> None:
    policy = CircuitBreakerSpec.model_validate({"failure_threshold": 2, "cooldown": "30s"}).policy()
    breakers = Breakers(lambda name: policy, new_metrics(), Clock())

    async def black_holed(event: Any, ctx: JobContext) -> None:
        async with ctx.dependency("http:hooks.example:443"):
            await asyncio.sleep(10)  # connect never completes

    r = rig_factory(
        handler=black_holed,
        guard=breakers.guard,
        on_dependency_timeout=breakers.record_timeout,
        timeout_s=0.02,
    )
    for offset, event_id in enumerate(["a", "b"]):
        await r.processor.process(r.entry(offset, event_id=event_id))
    assert breakers.registry.get("http:hooks.example:443").state == "open"


async def test_a_permanent_decode_failure_goes_to_the_dlq_as_permanent(
    rig_factory: Callable[..., Rig],
) -> None:
    from streams.crypto import UnknownKeyId

    class Sealed:
        def decode_event(self, data: bytes) -> Any:
            raise UnknownKeyId("push.requested.device_ids[0]: unknown key id 'k0' (known: k1)")

    r = rig_factory(handler=ok, decoder=Sealed())
    value = encode_event("e1", EVENT_TYPE)
    await r.processor.process(r.entry(value=value))
    (sent,) = r.route.sent
    assert sent.topic == DLQ and sent.value == value  # the ciphertext record, unchanged
    assert sent.header_dict[h.DLQ_REASON] == "permanent"
    assert "unknown key id 'k0'" in sent.header_dict[h.ERROR_MESSAGE]
    await r.durable()
    assert r.calls == [] and r.acks == [(MAIN, 2, 7)]


async def test_suppressed_is_acked_like_done_and_counted(rig_factory: Callable[..., Rig]) -> None:
    from streams.errors import Suppressed

    r = rig_factory(handler=raising(Suppressed("push: no consent")), changelog_auto=True)
    await r.processor.process(r.entry())
    assert await r.writer.flush(1.0)
    assert r.route.sent == []  # no retry tier, no DLQ
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)]
    assert r.outcome("suppressed") == 1 and r.outcome("done") == 0
    assert r.ledger is not None and r.ledger.seen(2, event_hash("e1"))  # a redelivery skips it


# --- the control plane: cancels and status ----------------------------------------------


class StatusLog:
    def __init__(self) -> None:
        self.notes: list[tuple[str, str, int]] = []

    def note(
        self,
        event_id: str,
        family: str,
        event_type: str,
        tenant: Any,
        state: str,
        attempt: int,
        **fields: Any,
    ) -> None:
        self.notes.append((event_id, state, attempt))


def cancel_view(*event_ids: str) -> Any:
    from streams.control.model import Command
    from streams.control.reader import ControlView
    from streams.worker.control import WorkerControl

    view = ControlView(lambda: NOW_MS)
    for event_id in event_ids:
        view.apply(
            f"cancel/{event_id}".encode(),
            Command(kind="cancel", target=event_id, issued_at_ms=1).encode(),
        )
    return WorkerControl(view=view, follower=None, topics_of={}, clock_ms=lambda: NOW_MS)


async def test_a_cancelled_event_is_acked_as_cancelled_without_running(
    rig_factory: Callable[..., Rig],
) -> None:
    status = StatusLog()
    r = rig_factory(handler=ok, control=cancel_view("e1"), status=status)
    await r.processor.process(r.entry(event_id="e1"))
    await r.processor.process(r.entry(8, event_id="e2"))
    assert [ctx.event_id for _, ctx in r.calls] == ["e2"]
    assert await r.writer.flush(1.0)
    await r.durable()
    assert r.acks == [(MAIN, 2, 7), (MAIN, 2, 8)]
    assert r.outcome("cancelled") == 1 and r.outcome("done") == 1
    assert status.notes == [("e2", "running", 1), ("e1", "cancelled", 1), ("e2", "done", 1)]
    assert r.route.sent == []


async def test_a_running_handler_that_stops_on_its_signal_is_cancelled_not_retried(
    rig_factory: Callable[..., Rig],
) -> None:
    control = cancel_view()
    started = asyncio.Event()

    async def slow(event: Any, ctx: JobContext) -> None:
        started.set()
        await ctx.cancel.race(asyncio.sleep(30))

    r = rig_factory(handler=slow, control=control, timeout_s=60)
    task = asyncio.ensure_future(r.processor.process(r.entry(event_id="e1")))
    await started.wait()
    control._on_command("cancel", "e1", _cancel("e1"))  # as the follower's thread hands it
    await asyncio.wait_for(task, 5)
    assert await r.writer.flush(1.0)
    assert r.outcome("cancelled") == 1 and r.outcome("retried") == 0
    await r.durable()
    assert r.acks == [(MAIN, 2, 7)] and r.route.sent == []


def _cancel(event_id: str) -> Any:
    from streams.control.model import Command

    return Command(kind="cancel", target=event_id, issued_at_ms=1)
