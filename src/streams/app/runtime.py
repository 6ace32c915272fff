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
from typing import Any

import faust

from streams.app.breakers import Breakers
from streams.app.changelog import ChangelogWriter
from streams.app.factory import create_app
from streams.app.lanes import Lane, Lanes
from streams.app.ledger import Ledger
from streams.app.ordering import PartitionLog
from streams.app.processor import Decoder, Processor, ProcessorConfig
from streams.app.ratelimit import RateGate
from streams.app.scheduler import DueScheduler
from streams.catalog import Catalog, Family
from streams.core import topology
from streams.core.topology import FamilyTopics
from streams.errors import TopologyError
from streams.jobs.registry import HandlerRegistry
from streams.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

_EXPIRY_INTERVAL_S = 60.0
_LAG_INTERVAL_S = 5.0
_RESYNC_RETRY_S = 30.0


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
        self._ever_read: set[Any] = set()  # partitions this process admitted records of
        self._expected: dict[Any, int] = {}  # next offset to admit, per partition
        # partition -> (out of sequence since, last seek back), both monotonic seconds
        self._resyncing: dict[Any, tuple[float, float]] = {}
        self._topic_family: dict[str, FamilyRuntime] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.draining = False
        self._stopping = False
        self.assigned_once = False
        self.started = False
        self.topology_errors: list[str] = []
        for name in names:
            self._build_family(catalog.family(name), decoder)
        # faust drops fetched records below its per-partition "read offset"; after a seek back
        # that filter raced with records still in flight and swallowed the re-fetched ones
        # (a partition stalled). Our own in-sequence admission drops duplicates, so the
        # filter is bypassed for our topics.
        self.app.consumer._read_offset = _UnfilteredReadOffsets(set(self._topic_family))
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.app.task(self._boot)

    # --- construction -------------------------------------------------------------------

    def _breaker_policy(self, name: str) -> Any:
        family = name.partition(":")[0]
        fam = self.catalog.families.get(family)
        if fam is None:  # e.g. "smtp:host:port" -> the email family's policy
            fam = self.catalog.families.get({"smtp": "email"}.get(family, ""), None)
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
                    on_count=lambda n, fr=fr: waiting.set(sum(len(s) for s in fr.schedulers)),
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
            self._ever_read.add(tp)
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
        asyncio.get_running_loop().create_task(self._seek({tp: expected}))

    async def _seek(self, offsets: dict[Any, int]) -> None:
        """Seek in the consumer's own thread and wait until the positions are set.

        faust's ``Consumer.seek`` calls aiokafka from the event loop's thread while aiokafka
        runs in the consumer thread; such a seek was seen not to take effect (a partition
        then waited forever for its expected offset)."""
        try:
            await self.app.consumer._thread.seek_wait(offsets)
        except Exception as exc:  # retried by the next out-of-sequence record
            log.warning("seek to %s failed: %r", offsets, exc)

    async def _position(self, tps: set[Any]) -> None:
        """Seek every assigned partition to its committed offset (or the log start when
        nothing is committed or the committed records were deleted) and expect it next.

        aiokafka seeks only to committed offsets > 0 and otherwise keeps whatever fetch
        position it had: a partition read (not committed) by this worker, owned by another
        one in between and then handed back, resumed *after* records that had been dropped
        unacked on revoke (a retry record held for an hour was skipped, found by a test).
        """
        if not tps:
            return
        from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

        consumer = self.app.consumer
        committed = await consumer.seek_to_committed()  # seeks offsets > 0
        earliest = await consumer.earliest_offsets(*(ensure_aiokafka_TP(tp) for tp in tps))
        start_of = {(tp.topic, tp.partition): offset for tp, offset in earliest.items()}
        at_start = []
        for tp in tps:
            log_start = start_of.get((tp.topic, tp.partition)) or 0
            done = committed.get(tp) or 0
            self._expected[tp] = max(done, log_start)
            # nothing committed (or deleted): from the log start. Only a partition this
            # process read before can have a stale fetch position; leave fresh ones to
            # aiokafka's own reset (fewer seeks racing with the first fetches)
            if done <= log_start and tp in self._ever_read:
                at_start.append(ensure_aiokafka_TP(tp))
        if at_start:
            await consumer._thread.seek_to_beginning(*at_start)
        log.info("positioned %d partition(s); %d from the log start", len(tps), len(at_start))

    def _pause(self, tp: Any) -> None:
        self.app.consumer.pause_partitions({tp})

    def _resume(self, tp: Any) -> None:
        if tp in self._active:
            self.app.consumer.resume_partitions({tp})

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
        await self._position(self._active)
        self._positioned = True
        self._admission_open().set()
        if problems:
            message = "co-partitioned assignment does not hold:\n" + "\n".join(problems)
            log.error(message)
            await self.app.crash(TopologyError(message))

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

    async def drain(self) -> None:
        """Shutdown: stop fetching, finish what runs (bounded), commit the finished prefix."""
        if self._stopping:
            return
        self._stopping = True
        self.draining = True  # nothing new is admitted from here on
        self._admission_open().set()  # wake lanes holding a record: they leave it unacked
        consumer = self.app.consumer
        try:
            assignment = set(consumer.assignment())
            consumer.pause_partitions(assignment)
        except Exception:
            assignment = set(self._active)
        self.app.flow_control.suspend()
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
