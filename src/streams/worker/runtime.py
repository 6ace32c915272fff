"""The worker's runtime: one processor per family over a faust app, plus the rebalance and
shutdown protocol that faust does not give us.

On revoke (faust pauses fetching and clears agent buffers first): records waiting for their
due time are dropped unacked, running handlers get ``drain_timeout_s`` to finish (then are
cancelled), the done-markers are flushed, the finished prefix of each partition is acked and
committed, and the partitions' state is forgotten. Shutdown does the same for every
partition after pausing them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import faust

from streams.catalog import Catalog, Family
from streams.core import topology
from streams.core.topology import FamilyTopics
from streams.errors import TopologyError
from streams.jobs.registry import HandlerRegistry
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.breakers import Breakers
from streams.worker.changelog import ChangelogWriter
from streams.worker.factory import create_app
from streams.worker.lanes import Lane, Lanes
from streams.worker.ledger import Ledger
from streams.worker.ordering import PartitionLog
from streams.worker.processor import Decoder, Processor, ProcessorConfig
from streams.worker.ratelimit import RateGate
from streams.worker.scheduler import DueScheduler

log = logging.getLogger(__name__)

_EXPIRY_INTERVAL_S = 60.0
_LAG_INTERVAL_S = 5.0
_RESYNC_RETRY_S = 30.0
_STALL_S = 30.0  # no progress for this long with records behind the fetch position
_SEEK_TIMEOUT_S = 30.0


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class FamilyRuntime:
    family: Family
    topics: FamilyTopics
    processor: Processor
    lanes: Lanes
    ledger: Ledger | None
    writers: list[ChangelogWriter]
    schedulers: list[DueScheduler] = field(default_factory=list)


class Runtime:
    def __init__(
        self,
        *,
        settings: Settings,
        catalog: Catalog,
        registry: HandlerRegistry,
        decoder: Decoder,
        metrics: Metrics,
        families: list[str] | None = None,
        clock_ms: Callable[[], int] = wall_ms,
        app: faust.App | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.registry = registry
        self.metrics = metrics
        self.clock_ms = clock_ms
        self.app = app or create_app(settings, catalog)
        names = families or list(catalog.families)
        self.families: dict[str, FamilyRuntime] = {}
        self.breakers = Breakers(self._breaker_policy, metrics, clock_ms)
        self._logs: dict[Any, PartitionLog] = {}
        self._active: set[Any] = set()
        self._positioned = False  # partitions sought to their committed offsets
        self._admission_event: asyncio.Event | None = None
        self._stop_event: asyncio.Event | None = None
        self._expected: dict[Any, int] = {}  # next offset to admit, per partition
        # partitions whose buffered records faust discarded (see _guard_flow_control)
        self._lost: set[Any] = set()
        # partition -> (expected offset, monotonic time it was first seen), for the watchdog
        self._progress: dict[Any, tuple[int, float]] = {}
        self._seeks: set[asyncio.Task[None]] = set()  # seeks started without awaiting them
        # partition -> (out of sequence since, last seek back), both monotonic seconds
        self._resyncing: dict[Any, tuple[float, float]] = {}
        self._topic_family: dict[str, FamilyRuntime] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.draining = False
        self.assigned_once = False
        self.started = False
        self.topology_errors: list[str] = []
        for name in names:
            self._build_family(catalog.family(name), decoder)
        # faust drops fetched records below its per-partition "read offset"; after a seek back
        # that filter raced with records still in flight and swallowed the re-fetched ones
        # (a partition stalled). Our own in-sequence admission drops duplicates, so the
        # filter is bypassed for our topics.
        consumer: Any = self.app.consumer
        consumer._read_offset = _UnfilteredReadOffsets(set(self._topic_family))
        self._guard_flow_control()
        self._guard_fetch()
        self._tune_fetch_wait(settings.fetch_max_wait_ms)
        # faust's signal type wants a ``signal`` keyword; our handlers take it in **kwargs
        self.app.on_partitions_revoked.connect(cast(Any, self._on_revoked))
        self.app.on_partitions_assigned.connect(cast(Any, self._on_assigned))
        self.app.task(self._boot)

    # --- construction -------------------------------------------------------------------

    def _breaker_policy(self, name: str) -> Any:
        """The policy of dependency ``name``: that of the family whose job declares its
        prefix ("smtp:relay:587" -> email), else of the family it is named after, else of
        the first family in the catalog."""
        family = self.registry.dependency_family(name) or name.partition(":")[0]
        fam = self.catalog.families.get(family)
        return (fam or next(iter(self.catalog.families.values()))).circuit_breaker

    def _table(self, family: Family, kind: str) -> Any:
        return self.app.Table(
            topology.table_name(family.name, kind),
            default=None,
            partitions=family.partitions,
            key_type=bytes,
            value_type=bytes,
            help=f"streams {kind} state of family {family.name}",
        )

    def _writer(self, table: Any, family: Family) -> ChangelogWriter:
        histogram = self.metrics.ledger_flush_duration.labels(family.name)
        counter = self.metrics.ledger_flushes.labels(family.name)

        def on_flush(seconds: float) -> None:
            histogram.observe(seconds)
            counter.inc()

        return ChangelogWriter(
            producer=_LazyProducer(self.app),
            topic=topology.changelog_topic(self.settings.app_id, table.name),
            store=table.data,
            on_flush=on_flush,
            linger_s=self.settings.ledger_linger_ms / 1000,
        )

    def _build_family(self, family: Family, decoder: Decoder) -> None:
        settings = self.settings
        topics = family.topics(settings.topic_prefix)
        done_table = self._table(family, "done")
        bucket_table = self._table(family, "buckets")
        done_writer = self._writer(done_table, family)
        bucket_writer = self._writer(bucket_table, family)
        ledger = None
        if family.idempotency.enabled:
            size_gauge = self.metrics.idempotency_keys.labels(family.name)
            ledger = Ledger(
                writer=done_writer,
                store=done_table.data,
                ttl_ms=family.idempotency.ttl_ms,
                clock_ms=self.clock_ms,
                on_size=size_gauge.set,
            )
        gate = None
        if family.rate_limits:
            gate = RateGate(
                family=family,
                store=bucket_table.data,
                writer=bucket_writer,
                metrics=self.metrics,
                clock_ms=self.clock_ms,
            )
        processor = Processor(
            family=family,
            config=ProcessorConfig(
                prefix=settings.topic_prefix,
                handler_timeout_s=family.handler_timeout_ms / 1000,
                default_max_defer_ms=min(86_400_000, family.retry.retention_ms // 2),
            ),
            decoder=decoder,
            handlers=self.registry,
            producer=_LazyProducer(self.app),
            ledger=ledger,
            metrics=self.metrics,
            clock_ms=self.clock_ms,
            guard=self.breakers.guard,
            on_dependency_timeout=self.breakers.record_timeout,
            gate=gate,
        )
        lanes = Lanes(
            processor,
            concurrency=family.concurrency,
            on_in_flight=self.metrics.in_flight.labels(family.name),
        )
        fr = FamilyRuntime(family, topics, processor, lanes, ledger, [done_writer, bucket_writer])
        self.families[family.name] = fr
        waiting = self.metrics.waiting.labels(family.name)
        for name in topics.all[:-1]:  # the DLQ is read by operators, not processed
            scheduler = None
            if name != topics.main:
                scheduler = DueScheduler(
                    lanes.admit,
                    clock_ms=self.clock_ms,
                    window=settings.retry_window,
                    pause=self._pause,
                    resume=self._resume,
                    on_count=partial(self._count_waiting, waiting, fr),
                )
                fr.schedulers.append(scheduler)
            lane = Lane(
                lanes,
                topic=name,
                log_for=self._log_for,
                admission=self.admission,
                scheduler=scheduler,
                clock_ms=self.clock_ms,
                skew_margin_ms=settings.clock_skew_margin_ms,
            )
            self._add_agent(name, lane)
            self._topic_family[name] = fr

    @staticmethod
    def _count_waiting(gauge: Any, fr: FamilyRuntime, _count: int) -> None:
        gauge.set(sum(len(s) for s in fr.schedulers))

    def _add_agent(self, topic_name: str, lane: Lane) -> None:
        channel = self.app.topic(
            topic_name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

        async def consume(stream: Any) -> None:
            await lane.consume(stream)

        self.app.agent(channel, name=f"streams.lane.{topic_name}")(consume)

    # --- partitions ---------------------------------------------------------------------

    async def admission(self) -> None:
        """Wait while partitions are being (re)positioned after an assignment; records
        fetched meanwhile are held, and the in-sequence check sorts out stale ones."""
        if not self._positioned and not self.draining:
            await self._admission_open().wait()

    def _admission_open(self) -> asyncio.Event:
        if self._admission_event is None:
            self._admission_event = asyncio.Event()
        return self._admission_event

    def _log_for(self, tp: Any, offset: int) -> PartitionLog | None:
        """The partition's log if the record at ``offset`` may be admitted, else None (the
        record stays unacked and is read again).

        Offsets are admitted strictly in sequence from the committed position: a record
        beyond the next expected offset means the fetch position skipped records (stale
        positions after a rebalance, records dropped while revoking), so the partition is
        sought back and records are dropped until the expected one arrives. Acking past a
        record we never saw would commit past it (faust #606). Our topics have contiguous
        offsets (delete policy, no transactional producers).
        """
        if self.draining or not self._positioned or tp not in self._active:
            reason = (
                "draining"
                if self.draining
                else "not_positioned"
                if not self._positioned
                else "not_assigned"
            )
            self.metrics.not_admitted.labels(tp.topic, reason).inc()
            return None
        expected = self._expected.get(tp)
        if expected is not None and offset != expected:
            if offset > expected:
                self.metrics.not_admitted.labels(tp.topic, "out_of_sequence").inc()
                self._resync(tp, expected)
            else:  # a re-delivery of a record already admitted
                self.metrics.not_admitted.labels(tp.topic, "redelivered").inc()
            return None
        self._expected[tp] = offset + 1
        if self._resyncing.pop(tp, None) is not None:
            log.info("%s[%d] back in sequence at offset %d", tp.topic, tp.partition, offset)
        plog = self._logs.get(tp)
        if plog is None:
            plog = self._logs[tp] = PartitionLog(tp)
        return plog

    def _resync(self, tp: Any, expected: int) -> None:
        now = time.monotonic()
        since, last_seek = self._resyncing.get(tp, (now, 0.0))
        if last_seek == 0.0:
            log.warning(
                "%s[%d]: offset %d expected but later records arrived; seeking back",
                tp.topic,
                tp.partition,
                expected,
            )
        elif now - last_seek < _RESYNC_RETRY_S:
            return
        else:
            log.error(
                "%s[%d] has not delivered offset %d for %.0fs (a gap in the log? "
                "transactional or compacted input is not supported); seeking again",
                tp.topic,
                tp.partition,
                expected,
                now - since,
            )
        self._resyncing[tp] = (since, now)
        self._in_background(self._seek({tp: expected}))

    def _in_background(self, seek: Any) -> None:
        """Start ``seek`` from synchronous code, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(seek)
        self._seeks.add(task)
        task.add_done_callback(self._seeks.discard)

    async def _seek(self, offsets: dict[Any, int]) -> None:
        """Seek in the consumer's own thread and wait until the positions are set.

        faust's ``Consumer.seek`` calls aiokafka from the event loop's thread while aiokafka
        runs in the consumer thread; such a seek was seen not to take effect (a partition
        then waited forever for its expected offset)."""
        try:
            consumer: Any = self.app.consumer
            async with asyncio.timeout(_SEEK_TIMEOUT_S):
                await consumer._thread.seek_wait(offsets)
        except Exception as exc:  # retried by the next out-of-sequence record / watchdog
            log.warning("seek to %s failed: %r", offsets, exc)

    async def _position(self, tps: set[Any]) -> None:
        """Seek every assigned partition to its committed offset (or the log start when
        nothing is committed or the committed records were deleted) and expect it next.

        Every partition is sought explicitly: aiokafka seeks only to committed offsets > 0
        and otherwise keeps whatever fetch position it had, and a partition read (not
        committed) by this worker, owned by another one in between and then handed back,
        resumed *after* records that had been dropped unacked on revoke (a retry record
        held for an hour was skipped, found by a test).
        """
        if not tps:
            return
        from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

        consumer: Any = self.app.consumer
        committed = await consumer.seek_to_committed()
        earliest = await consumer.earliest_offsets(*(ensure_aiokafka_TP(tp) for tp in tps))
        start_of = {(tp.topic, tp.partition): offset for tp, offset in earliest.items()}
        now = time.monotonic()
        targets = {}
        for tp in tps:
            log_start = start_of.get((tp.topic, tp.partition)) or 0
            self._expected[tp] = max(committed.get(tp) or 0, log_start)
            self._progress[tp] = (self._expected[tp], now)
            targets[ensure_aiokafka_TP(tp)] = self._expected[tp]
        self._lost -= tps  # records discarded before this seek are fetched again
        await self._seek(targets)
        log.info("positioned %d partition(s)", len(tps))

    def _guard_flow_control(self) -> None:
        """Seek back partitions whose buffered records faust discards.

        faust's ``flow_control.resume()`` clears every stream buffer. At the end of table
        recovery faust resumes the partitions, seeks them to their committed offsets and
        only *then* resumes flow: records fetched in between were thrown away after the
        fetch position had passed them, and nothing delivered them again (a restarted worker
        whose tables needed recovery stopped after its first ~25 records, lag > 0 and the
        fetch position at the end of the log). Every clear is therefore looked at: the
        partitions that lose records are sought back to their next expected offset.
        """
        flow_control: Any = self.app.flow_control
        clear = flow_control.clear

        def guarded_clear() -> None:
            lost = self._buffered()
            clear()
            if not lost or self.draining:
                return
            self._lost.update(lost)
            # a clear while flow is suspended is faust's revoke: the next assignment
            # positions every partition anyway
            if self._positioned and flow_control.is_active():
                self._in_background(self._reseek_lost())

        flow_control.clear = guarded_clear

    def _guard_fetch(self) -> None:
        """Fetch only the partitions that were active when the fetch was asked for, and give
        back what faust would throw away.

        faust hands aiokafka its *live* set of active partitions; the fetch runs in the
        consumer thread while the event loop keeps changing that set. When it became empty
        mid-fetch (recovery pauses the changelogs while the stream partitions are still
        paused), aiokafka read "no partitions" as "every partition" and returned records
        that faust then dropped because their partition was not active, after the fetch
        position had moved past them (a restarted worker never delivered its backlog:
        position at the end of the log, not one record seen). The fetch now gets a
        snapshot; records returned for a partition paused meanwhile are removed before
        faust sees them and their partition is sought back to the first of them.
        """
        consumer: Any = self.app.consumer
        getmany = consumer._getmany

        async def snapshot_getmany(active_partitions: Any, timeout: float) -> Any:
            if active_partitions is None:  # client-only apps fetch everything
                return await getmany(None, timeout)
            records = await getmany(set(active_partitions), timeout)
            dropped = {
                tp: batch[0].offset
                for tp, batch in records.items()
                if batch and tp not in active_partitions and tp not in consumer._buffered_partitions
            }
            for tp in dropped:
                del records[tp]
            ours = {tp: offset for tp, offset in dropped.items() if tp.topic in self._topic_family}
            if ours:
                for tp in ours:
                    self.metrics.reseeks.labels(tp.topic, "paused").inc()
                await self._seek(ours)
            return records

        consumer._getmany = snapshot_getmany

    def _tune_fetch_wait(self, wait_ms: int) -> None:
        """Give the worker's aiokafka consumer ``wait_ms`` as its fetch max wait.

        faust creates it with a hard-coded 1,500 ms. aiokafka keeps one fetch in flight per
        broker and leaves out of it every partition whose fetched records are not consumed
        yet, so while a worker works through a batch of the main topic a fetch holding only
        idle partitions (retry tiers) waited up to 1.5 s at the broker, and new main-topic
        records waited with it (the latency stalls of bench P3).
        """
        consumer: Any = self.app.consumer
        thread = consumer._thread
        create = thread._create_worker_consumer

        def create_worker_consumer(*args: Any, **kwargs: Any) -> Any:
            kafka = create(*args, **kwargs)
            kafka._fetch_max_wait_ms = wait_ms  # read when its fetcher starts
            return kafka

        thread._create_worker_consumer = create_worker_consumer

    def _buffered(self) -> set[Any]:
        """Partitions of our topics with records waiting in faust's stream buffers."""
        found: set[Any] = set()
        for queue in list(getattr(self.app.flow_control, "_queues", ())):
            for item in list(getattr(queue, "_queue", ())):
                tp = getattr(getattr(item, "message", None), "tp", None)
                if tp is not None and tp.topic in self._topic_family:
                    found.add(tp)
        return found

    async def _reseek_lost(self) -> None:
        if not self._positioned or self.draining or not self._lost:
            return
        lost, self._lost = self._lost, set()
        offsets = {
            tp: self._expected[tp] for tp in lost if tp in self._active and tp in self._expected
        }
        if not offsets:
            return
        for tp in offsets:
            self.metrics.reseeks.labels(tp.topic, "cleared").inc()
        log.info(
            "faust discarded buffered records of %d partition(s); seeking back: %s",
            len(offsets),
            ", ".join(f"{tp.topic}[{tp.partition}]@{off}" for tp, off in sorted(offsets.items())),
        )
        await self._seek(offsets)

    def _pause(self, tp: Any) -> None:
        self.app.consumer.pause_partitions({tp})

    def _resume(self, tp: Any) -> None:
        """Resume fetching ``tp`` from its next expected offset: records fetched while it was
        paused were dropped by faust after the fetch position had passed them."""
        if tp not in self._active:
            return
        self.app.consumer.resume_partitions({tp})
        expected = self._expected.get(tp)
        if expected is not None and self._positioned and not self.draining:
            self._in_background(self._seek({tp: expected}))

    async def _on_assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        self._positioned = False
        self._admission_open().clear()
        self._active = {tp for tp in assigned if tp.topic in self._topic_family}
        self.assigned_once = True
        by_topic: dict[str, set[int]] = {}
        for tp in self._active:
            by_topic.setdefault(tp.topic, set()).add(tp.partition)
        problems: list[str] = []
        for fr in self.families.values():
            main = by_topic.get(fr.topics.main, set())
            for name in fr.topics.retries:
                got = by_topic.get(name, set())
                if got != main:
                    problems.append(
                        f"{fr.family.name}: partitions {sorted(main)} of {fr.topics.main} but "
                        f"{sorted(got)} of {name} are assigned here (co-partitioning broken)"
                    )
            if fr.ledger is not None:
                fr.ledger.assign(main)
        for fr in self.families.values():
            for scheduler in fr.schedulers:
                scheduler.repause()
        self.topology_errors = problems
        # the seeks run in the consumer thread, which is itself waiting for this handler:
        # if shutdown stops that thread meanwhile they never finish (a SIGTERM during a
        # rebalance hung until the shutdown deadline and exited without committing)
        if not await self._unless_stopping(self._position(self._active)):
            return
        self._positioned = True
        self._admission_open().set()
        await self._unless_stopping(self._reseek_lost())
        if problems:
            message = "co-partitioned assignment does not hold:\n" + "\n".join(problems)
            log.error(message)
            await self.app.crash(TopologyError(message))

    def _stopping_event(self) -> asyncio.Event:
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
        return self._stop_event

    async def _unless_stopping(self, work: Any) -> bool:
        """Await ``work`` unless shutdown starts first (then cancel it); True if it ran."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopping_event().wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        log.info("shutdown started during a rebalance: partitions left unpositioned")
        return False

    async def _on_revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        self._positioned = False
        self._admission_open().clear()
        await self.release(set(revoked), self.settings.drain_timeout_s)

    async def release(self, tps: set[Any], timeout_s: float) -> None:
        """Give ``tps`` up: drop waiting records, let running ones finish (up to
        ``timeout_s``), make done-markers durable, ack the finished prefix and commit."""
        tps = {tp for tp in tps if tp.topic in self._topic_family}
        self._active -= tps
        for tp in tps:
            self._expected.pop(tp, None)
            self._resyncing.pop(tp, None)
            self._progress.pop(tp, None)
        if not tps:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        dropped = sum(s.drop(tps) for fr in self.families.values() for s in fr.schedulers)
        for fr in self.families.values():
            mine = {tp for tp in tps if self._topic_family[tp.topic] is fr}
            if not mine:
                continue
            if not await fr.lanes.wait_idle(mine, max(0.0, deadline - loop.time())):
                cancelled = fr.lanes.cancel(mine)
                log.warning(
                    "%s: cancelled %d handler(s) past the drain deadline", fr.family.name, cancelled
                )
        for fr in self.families.values():
            for writer in fr.writers:
                await writer.flush(max(0.1, deadline - loop.time()))
        unacked = 0
        for tp in tps:
            plog = self._logs.pop(tp, None)
            if plog is not None:
                unacked += plog.close()
        for fr in self.families.values():
            parts = {tp.partition for tp in tps if tp.topic == fr.topics.main}
            if fr.ledger is not None and parts:
                fr.ledger.revoke(parts)
        try:
            await self.app.consumer.commit()
        except Exception as exc:  # the next owner re-reads from the last commit
            log.warning("commit on release failed: %r", exc)
        log.info(
            "released %d partition(s): %d waiting dropped, %d left unacked",
            len(tps),
            dropped,
            unacked,
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def _boot(self) -> None:
        for fr in self.families.values():
            for writer in fr.writers:
                writer.start()
            for scheduler in fr.schedulers:
                self._spawn(scheduler.run(), f"scheduler.{fr.family.name}")
        for job in self.registry.jobs:
            await job.start()
        self._spawn(self._expiry_loop(), "ledger.expiry")
        self._spawn(self._lag_loop(), "consumer.lag")
        self.started = True

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(_EXPIRY_INTERVAL_S)
            for fr in self.families.values():
                if fr.ledger is not None:
                    fr.ledger.expire()

    async def _lag_loop(self) -> None:
        gauge = self.metrics.consumer_lag
        while True:
            await asyncio.sleep(_LAG_INTERVAL_S)
            for tp, plog in list(self._logs.items()):
                try:
                    highwater = self.app.consumer.highwater(tp)
                except Exception:
                    continue
                if highwater is not None and plog.last_offset >= 0:
                    lag = max(0, highwater - plog.last_offset - 1)
                    gauge.labels(tp.topic, str(tp.partition)).set(lag)
            try:
                await self.watch_stalls(time.monotonic())
            except Exception:
                log.exception("stall watchdog failed")

    async def watch_stalls(self, now: float) -> list[Any]:
        """Seek back partitions that have records to read but deliver none (a safety net).

        A partition is stalled when its next expected offset is below the high watermark
        and has not moved for ``_STALL_S`` while nothing of it waits in a stream buffer,
        its family has free handler slots, it is not paused (retry window, recovery) and
        not already resyncing: records behind the fetch position that no fetch will
        deliver again. Seeking to the expected offset is harmless when it was not stalled
        (re-fetched records are dropped as redeliveries); each one is logged with the
        consumer's view of the partition and counted.
        """
        if not self._positioned or self.draining:
            return []
        consumer: Any = self.app.consumer
        candidates = []
        for tp in list(self._active):
            expected = self._expected.get(tp)
            if expected is None or tp in self._resyncing:
                continue
            try:
                highwater = consumer.highwater(tp)
            except Exception:
                continue
            seen, since = self._progress.setdefault(tp, (expected, now))
            if seen != expected or highwater is None or highwater <= expected:
                self._progress[tp] = (expected, now)
                continue
            if now - since < _STALL_S or tp in consumer._paused_partitions:
                continue
            if self._topic_family[tp.topic].lanes.saturated():
                continue
            candidates.append(tp)
        if not candidates:
            return []
        buffered = self._buffered()
        stalled = [tp for tp in candidates if tp not in buffered]
        for tp in stalled:
            self.metrics.reseeks.labels(tp.topic, "stalled").inc()
            self._progress[tp] = (self._expected[tp], now)
            log.warning(
                "%s[%d] delivered nothing for %.0fs though offset %d is below the high "
                "watermark; seeking back (state: %s)",
                tp.topic,
                tp.partition,
                now - since,
                self._expected[tp],
                self.partition_state(tp),
            )
        if stalled:
            await self._seek({tp: self._expected[tp] for tp in stalled})
        return stalled

    def partition_state(self, tp: Any) -> dict[str, Any]:
        """What the consumer stack knows of ``tp`` (diagnostics; read without locks)."""
        consumer: Any = self.app.consumer
        out: dict[str, Any] = {
            "expected": self._expected.get(tp),
            "flow_active": getattr(consumer, "flow_active", None),
            "paused": tp in consumer._paused_partitions,
            "buffer_full": tp in consumer._buffered_partitions,
        }
        try:
            out["highwater"] = consumer.highwater(tp)
            kafka = consumer._thread._consumer
            state = kafka._subscription.subscription.assignment.state_value(tp)
            out["position"] = state._position
            out["awaiting_reset"] = state.awaiting_reset
            out["prefetched"] = tp in kafka._fetcher._records
        except Exception as exc:  # diagnostics only
            out["error"] = repr(exc)
        return out

    async def drain(self) -> None:
        """Shutdown: stop fetching, finish what runs (bounded), commit the finished prefix."""
        if self.draining:
            return
        self.draining = True  # nothing new is admitted from here on
        self._stopping_event().set()  # a rebalance in progress stops waiting for seeks
        self._admission_open().set()  # wake lanes holding a record: they leave it unacked
        consumer = self.app.consumer
        try:
            assignment = set(consumer.assignment())
            consumer.pause_partitions(assignment)
        except Exception:
            assignment = set(self._active)
        # in the same step, as faust does on revoke: while flow control is suspended faust's
        # stream *skips and acks* every record it still takes from a buffer, and an ack past
        # a record that is still running would let faust commit past it (faust #606)
        self.app.flow_control.suspend()
        self.app.flow_control.clear()
        await self.release(set(self._active) | assignment, self.settings.drain_timeout_s)
        for job in self.registry.jobs:
            try:
                await job.stop()
            except Exception:
                log.exception("stopping a job failed")
        for task in self._tasks:
            task.cancel()
        for fr in self.families.values():
            for writer in fr.writers:
                await writer.stop()

    def ready(self) -> dict[str, bool]:
        """Readiness parts (all must be true): started, assigned, recovered, stable."""
        app = self.app
        recovery = getattr(getattr(app, "tables", None), "recovery", None)
        completed = getattr(recovery, "completed", None)
        recovered = bool(completed.is_set()) if completed is not None else True
        return {
            "started": self.started,
            "partitions_assigned": self.assigned_once,
            "tables_recovered": recovered,
            "not_rebalancing": not app.rebalancing,
            "not_draining": not self.draining,
            "topology_ok": not self.topology_errors,
            "partitions_in_sequence": all(
                time.monotonic() - since < _RESYNC_RETRY_S for since, _ in self._resyncing.values()
            ),
        }


class _UnfilteredReadOffsets(defaultdict):  # type: ignore[type-arg]
    """faust's read offsets, reporting "nothing read yet" for the given topics."""

    def __init__(self, topics: set[str]) -> None:
        super().__init__(lambda: None)
        self._topics = topics

    def __getitem__(self, tp: Any) -> Any:
        if tp.topic in self._topics:
            return None
        return super().__getitem__(tp)


class _LazyProducer:
    """faust's producer, looked up when used (it exists once the app has started)."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> Any:
        return await self._app.producer.send(topic, key, value, partition, timestamp, headers)
