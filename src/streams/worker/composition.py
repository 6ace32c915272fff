"""The worker's parts, built: per family its tables, changelog writers, ledger, rate gate,
processor, lanes and one intake route per processed topic (main and retry tiers; the DLQ is
read by operators, not processed); and the jobs' wiring (breaker policies, start and stop).

Each processed topic also gets a faust agent that never receives a record (the batch route
takes them all, ``compat/batch_fetch.py``): it keeps the topic in faust's subscription and in
its co-partitioned assignment, as an agent's channel is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast

import faust
from faust.types import RecordMetadata, StreamT
from faust.types.core import HeadersArg
from faust.types.tables import TableT
from prometheus_client import Gauge

from streams.broker.clients import base_conf
from streams.catalog import Catalog, Family
from streams.core import topology
from streams.core.policies import CircuitBreakerPolicy
from streams.core.topology import FamilyTopics
from streams.jobs.registry import HandlerRegistry
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.at_most_once import CommitFirstLanes
from streams.worker.batching import Batches
from streams.worker.breakers import Breakers
from streams.worker.changelog import ChangelogWriter
from streams.worker.control import WorkerControl
from streams.worker.delays import HopOrAdmit
from streams.worker.intake import Intake, Route
from streams.worker.jobstate import StateTable
from streams.worker.lanes import Lanes
from streams.worker.ledger import Ledger
from streams.worker.ordering import PartitionLog
from streams.worker.priority import PriorityReady
from streams.worker.processor import Decoder, Processor, ProcessorConfig
from streams.worker.ratelimit import RateGate
from streams.worker.scheduler import DueScheduler
from streams.worker.status import StatusRecorder
from streams.worker.strict_drain import ParkedReader
from streams.worker.strict_glue import StrictProcessor
from streams.worker.tp import TP

log = logging.getLogger(__name__)


@dataclass
class FamilyRuntime:
    family: Family
    topics: FamilyTopics
    processor: Processor
    lanes: Lanes | CommitFirstLanes
    ledger: Ledger | None
    writers: list[ChangelogWriter]
    schedulers: list[DueScheduler] = field(default_factory=list)
    gate: RateGate | None = None  # the family's rate limits (reset by an operator)
    strict: StrictProcessor | None = None  # ordering: strict (worker/strict_glue.py)

    @property
    def name(self) -> str:
        return self.family.name

    @property
    def batches(self) -> Batches:
        """Its batch handlers' events (waiting for their batch, or in the running one)."""
        return self.processor.batches


class PartitionHooks(Protocol):
    """What the lanes and schedulers ask of the rebalance protocol (``Rebalancer``)."""

    def log_for(self, tp: TP, offset: int) -> PartitionLog | None: ...
    async def admission(self) -> None: ...
    async def commit_through(self, offsets: Mapping[TP, int]) -> bool: ...
    def pause(self, tp: TP) -> None: ...
    def resume(self, tp: TP) -> None: ...


# --- jobs: breaker policies, start and stop ---------------------------------------------


def breaker_policy(catalog: Catalog, registry: HandlerRegistry, name: str) -> CircuitBreakerPolicy:
    """The policy of dependency ``name``: that of the family whose job declares its prefix
    ("smtp:relay:587" -> email), else of the family it is named after, else of the first
    family in the catalog."""
    family = registry.dependency_family(name) or name.partition(":")[0]
    fam = catalog.families.get(family)
    return (fam or next(iter(catalog.families.values()))).circuit_breaker


async def start_jobs(registry: HandlerRegistry) -> None:
    for job in registry.jobs:
        await job.start()


async def stop_jobs(registry: HandlerRegistry) -> None:
    for job in registry.jobs:
        try:
            await job.stop()
        except Exception:
            log.exception("stopping a job failed")


# --- families ---------------------------------------------------------------------------


class FamilyBuilder:
    def __init__(
        self,
        *,
        app: faust.App,
        settings: Settings,
        metrics: Metrics,
        registry: HandlerRegistry,
        decoder: Decoder,
        breakers: Breakers,
        clock_ms: Callable[[], int],
        hooks: PartitionHooks,
        intake: Intake,
        control: WorkerControl | None = None,
        status: StatusRecorder | None = None,
    ) -> None:
        self.app = app
        self.intake = intake
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self.decoder = decoder
        self.breakers = breakers
        self.clock_ms = clock_ms
        self.hooks = hooks
        self.states: dict[str, StateTable] = {}  # family -> job-state table (shared view)
        self.control = control
        self.status = status

    def build(self, family: Family) -> FamilyRuntime:
        """One family's runtime, its agents registered with the app."""
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
            decoder=self.decoder,
            handlers=self.registry,
            producer=LazyProducer(self.app),
            ledger=ledger,
            metrics=self.metrics,
            clock_ms=self.clock_ms,
            guard=self.breakers.guard,
            on_dependency_timeout=self.breakers.record_timeout,
            gate=gate,
            tables=self.states,
            control=self.control,
            status=self.status,
        )
        strict = self._strict(family, topics, processor, ledger) if family.strict else None
        pool = Lanes(
            strict or processor,
            concurrency=family.concurrency,
            on_in_flight=self.metrics.in_flight.labels(family.name),
            gate=self.control.gate(family.name) if self.control else None,
            ready=PriorityReady(family) if family.priorities is not None else None,
        )
        lanes: Lanes | CommitFirstLanes = pool
        if family.delivery == "at_most_once":  # commit first, then run (worker/at_most_once.py)
            lanes = CommitFirstLanes(
                pool,
                self.hooks.commit_through,
                window=family.concurrency,
                on_lost=self.metrics.events.labels(family.name, "lost").inc,
            )
        fr = FamilyRuntime(family, topics, processor, lanes, ledger, [done_writer, bucket_writer])
        fr.gate = gate
        if strict is not None:
            strict.submit = pool.submit  # never at-most-once (the catalog refuses it)
            fr.strict = strict
            fr.writers.append(strict.writer)
        if family.state_table:
            state_table = self._table(family, "state")
            state_writer = self._writer(state_table, family)
            fr.writers.append(state_writer)
            self.states[family.name] = StateTable(state_table.data, state_writer)
        waiting = self.metrics.waiting.labels(family.name)
        tier_ms = dict(zip(topics.retries, sorted(set(family.retry.tier_delays_ms)), strict=True))
        for name in topics.all[:-1]:  # the DLQ is read by operators, not processed
            scheduler = None
            max_hold_ms = None
            if name != topics.main:
                max_hold_ms = 2 * tier_ms[name]  # longer waits (delayed events) hop
                dispatch = HopOrAdmit(
                    lanes.admit,
                    producer=LazyProducer(self.app),
                    clock_ms=self.clock_ms,
                    skew_margin_ms=settings.clock_skew_margin_ms,
                )
                scheduler = DueScheduler(
                    dispatch,
                    clock_ms=self.clock_ms,
                    window=settings.retry_window,
                    pause=self.hooks.pause,
                    resume=self.hooks.resume,
                    on_count=partial(_count_waiting, waiting, fr),
                )
                fr.schedulers.append(scheduler)
            default_lane = family.priorities.default if family.priorities else None
            lane = default_lane if name == topics.main else None  # a tier's: by header
            rank = _rank(family, default_lane) if name == topics.main else 0
            self.intake.add_topic(name, Route(lanes, scheduler, max_hold_ms, lane, rank))
            self._add_agent(name)
        for lane_name, lane_topic in topics.lanes:  # priority lanes (worker/priority.py)
            self.intake.add_topic(
                lane_topic, Route(lanes, lane=lane_name, rank=_rank(family, lane_name))
            )
            self._add_agent(lane_topic)
        return fr

    def _strict(
        self, family: Family, topics: FamilyTopics, processor: Processor, ledger: Ledger | None
    ) -> StrictProcessor:
        """The strict-order glue in front of ``processor`` (its router acks through it)."""
        assert ledger is not None and topics.parked is not None  # the catalog requires both
        table = self._table(family, "holds")
        conf = base_conf(self.settings)
        strict = StrictProcessor(
            processor,
            family=family,
            main_topic=topics.main,
            parked_topic=topics.parked,
            writer=self._writer(table, family),
            store=table.data,
            ledger=ledger,
            producer=LazyProducer(self.app),
            reader=partial(ParkedReader, conf),
            on_parked=self.metrics.parked.labels(family.name).set,
        )
        strict.attach(processor.router)
        return strict

    def _table(self, family: Family, kind: str) -> TableT[bytes, bytes | None]:
        return self.app.Table(
            topology.table_name(family.name, kind),
            default=None,
            partitions=family.partitions,
            key_type=bytes,
            value_type=bytes,
            help=f"streams {kind} state of family {family.name}",
        )

    def _writer(self, table: TableT[bytes, bytes | None], family: Family) -> ChangelogWriter:
        histogram = self.metrics.ledger_flush_duration.labels(family.name)
        counter = self.metrics.ledger_flushes.labels(family.name)

        def on_flush(seconds: float) -> None:
            histogram.observe(seconds)
            counter.inc()

        return ChangelogWriter(
            producer=LazyProducer(self.app),
            topic=topology.changelog_topic(self.settings.app_id, table.name),
            store=table.data,
            on_flush=on_flush,
            linger_s=self.settings.ledger_linger_ms / 1000,
        )

    def _add_agent(self, topic_name: str) -> None:
        channel = self.app.topic(
            topic_name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

        async def consume(stream: StreamT[bytes]) -> None:
            # never acks: a record reaching faust's stream stays unfinished; the in-sequence
            # admission seeks its partition back and the batch route reads it again
            async for event in cast(Any, stream).noack().events():
                log.warning(
                    "%s[%d]@%d reached faust's stream instead of the batch route",
                    event.message.topic,
                    event.message.partition,
                    event.message.offset,
                )

        self.app.agent(channel, name=f"streams.lane.{topic_name}")(consume)


def _rank(family: Family, lane: str | None) -> int:
    """A lane's admission rank: its place in the declared order (high first)."""
    if family.priorities is None or lane is None:
        return 0
    return list(family.priorities.lanes).index(lane)


def _count_waiting(gauge: Gauge, fr: FamilyRuntime, _count: int) -> None:
    gauge.set(sum(len(s) for s in fr.schedulers))


class LazyProducer:
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
        headers: HeadersArg,
    ) -> Awaitable[RecordMetadata]:
        return await self._app.producer.send(topic, key, value, partition, timestamp, headers)
