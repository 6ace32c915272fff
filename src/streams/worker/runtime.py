"""The worker's runtime: one processor per family over a faust app, started, watched and
drained.

A thin front over its parts: ``composition`` builds the families, ``compat`` is the one
view of faust's consumer (and every workaround of its internals), ``sequencer`` decides
which record is admitted and when a partition is sought back, ``rebalance`` carries out
the assignment, revoke and shutdown protocol, and ``loops`` runs the background work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Iterator
from functools import partial
from typing import Any, cast

import faust

from streams.catalog import Catalog, Family
from streams.control.reader import ControlView, TopicFollower
from streams.control.topics import control_topic, status_topic
from streams.core import headers as h
from streams.core import topology
from streams.jobs.registry import HandlerRegistry
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker import loops
from streams.worker.breakers import Breakers
from streams.worker.compat import FaustConsumer
from streams.worker.composition import (
    FamilyBuilder,
    FamilyRuntime,
    LazyProducer,
    breaker_policy,
    start_jobs,
    stop_jobs,
)
from streams.worker.control import WorkerControl
from streams.worker.factory import create_app
from streams.worker.heap import freeze_heap
from streams.worker.heartbeat import HeartbeatLoop, worker_identity
from streams.worker.intake import Intake
from streams.worker.ledger import Ledger
from streams.worker.processor import Decoder
from streams.worker.ratelimit_reset import RateLimitResets
from streams.worker.rebalance import Rebalancer
from streams.worker.sequencer import Sequencer
from streams.worker.status import StatusRecorder
from streams.worker.tp import TP

log = logging.getLogger(__name__)


COMMIT_INTERVAL_S = 1.0  # as faust's broker_commit_interval (worker/factory.py)


def wall_ms() -> int:
    return int(time.time() * 1000)


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
        monotonic_s: Callable[[], float] = time.monotonic,
        app: faust.App | None = None,
        control_plane: bool = True,
    ) -> None:
        """``control_plane``: follow ``streams.control`` and write ``streams.status``
        (``settings.status_tracking`` turns the latter off); False for in-process tests."""
        self.settings = settings
        self.catalog = catalog
        self.registry = registry
        self.metrics = metrics
        self.clock_ms = clock_ms
        self.app = app or create_app(settings, catalog)
        chosen = [catalog.family(name) for name in families or list(catalog.families)]
        self.breakers = Breakers(partial(breaker_policy, catalog, registry), metrics, clock_ms)
        topics = {
            name
            for family in chosen
            for ft in (family.topics(settings.topic_prefix),)
            for name in (*ft.all[:-1], *ft.lane_topics)
        }
        self.consumer = FaustConsumer(self.app, topics)
        self.sequencer = Sequencer(monotonic_s)
        self.partitions = Rebalancer(
            consumer=self.consumer,
            sequencer=self.sequencer,
            metrics=metrics,
            drain_timeout_s=settings.drain_timeout_s,
            crash=self.app.crash,
        )
        self.control, self.status = _control_plane(
            settings, chosen, clock_ms, enabled=control_plane
        )
        if self.control is not None:
            self.partitions.holds = self.control.holds
            self.control.on_cancel(self._expedite)
        self.intake = Intake(
            admission=self.partitions.admission,
            log_for=self.partitions.log_for,
            logs=self.partitions.logs,
            hold=self.consumer.hold,
            release=self.consumer.release,
            clock_ms=clock_ms,
            skew_margin_ms=settings.clock_skew_margin_ms,
        )
        self.partitions.advanced = self.intake.on_advance
        self.partitions.forget = self._forget
        self.partitions.on_positioned = freeze_heap
        builder = FamilyBuilder(
            app=self.app,
            settings=settings,
            metrics=metrics,
            registry=registry,
            decoder=decoder,
            breakers=self.breakers,
            clock_ms=clock_ms,
            hooks=self.partitions,
            intake=self.intake,
            control=self.control,
            status=self.status,
        )
        self.families: dict[str, FamilyRuntime] = {}
        for family in chosen:
            fr = self.families[family.name] = builder.build(family)
            self.partitions.add_family(fr)
        self.watchdog = loops.Watchdog(
            sequencer=self.sequencer,
            consumer=self.consumer,
            saturated=lambda tp: (
                tp in self.intake.held or self.partitions.by_topic[tp.topic].lanes.saturated()
            ),
            metrics=metrics,
        )
        self.consumer.install(
            on_discarded=self.partitions.on_discarded,
            on_withheld=self.partitions.on_withheld,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            sink=self.intake.sink,
        )
        self.heartbeat = HeartbeatLoop(
            worker_id=worker_identity(settings.worker_id),
            topic=topology.workers_topic(settings.topic_prefix),
            interval_s=settings.heartbeat_interval_s,
            sender=LazyProducer(self.app),
            families=self.families,
            assignment=self.consumer.assignment,
            breakers=self.breakers.registry.states,
            clock_ms=clock_ms,
            paused=lambda family: family in self.paused_families(),
        )
        self.resets = RateLimitResets(
            gates={n: fr.gate for n, fr in self.families.items() if fr.gate is not None},
            main_topic={n: fr.topics.main for n, fr in self.families.items()},
            assignment=self.consumer.assignment,
            tombstone=self._revoke_command,
            clock_ms=clock_ms,
        )
        if self.control is not None:
            self.control.view.listen(self.resets.from_thread)
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        # faust's signal type wants a ``signal`` keyword; our handlers take it in **kwargs
        self.app.on_partitions_revoked.connect(cast(Any, self.partitions.on_revoked))
        self.app.on_partitions_assigned.connect(cast(Any, self.partitions.on_assigned))
        self.app.on_rebalance_complete.connect(cast(Any, self._tables_recovered))
        self.app.task(self._boot)

    @property
    def draining(self) -> bool:
        return self.sequencer.draining

    @property
    def assigned_once(self) -> bool:
        return self.partitions.assigned_once

    @property
    def topology_errors(self) -> list[str]:
        return self.partitions.topology_errors

    def _forget(self, tps: set[TP]) -> None:
        """Partitions given up: the intake's queued batches and strict families' parked
        records are dropped unfinished."""
        self.intake.forget(tps)
        for fr in self.families.values():
            if fr.strict is not None:
                fr.strict.forget(tps)

    async def _tables_recovered(self, sender: object, **kwargs: object) -> None:
        """faust recovered the tables of the new assignment: strict families read their
        holds back now (a released key whose spill is still to drain may see no record)."""
        assigned = self.consumer.assignment()
        for fr in self.families.values():
            if fr.strict is not None:
                fr.strict.load({tp.partition for tp in assigned if tp.topic == fr.topics.main})

    def _ledgers(self) -> Iterator[Ledger]:
        return (fr.ledger for fr in self.families.values() if fr.ledger is not None)

    # --- lifecycle ----------------------------------------------------------------------

    async def _boot(self) -> None:
        for fr in self.families.values():
            for writer in fr.writers:
                writer.start()
            for scheduler in fr.schedulers:
                self._spawn(scheduler.run(), f"scheduler.{fr.family.name}")
        if self.status is not None:
            self.status.start()
        await start_jobs(self.registry)
        self._spawn(self.intake.run(), "intake")
        self._spawn(self.partitions.committer.run(COMMIT_INTERVAL_S), "commits")
        self._spawn(loops.expire_ledgers(self._ledgers), "ledger.expiry")
        self._spawn(
            loops.watch_lag(
                self.partitions.logs,
                self.consumer,
                self.metrics.consumer_lag,
                self.watchdog,
                age_gauge=self.metrics.oldest_unprocessed_age,
            ),
            "consumer.lag",
        )
        self.resets.attach(asyncio.get_running_loop())
        if self.control is not None:  # the whole control topic read: families open
            await self.control.start(_PauseSide(self))
        self._spawn(self.heartbeat.run(), "heartbeat")
        self.started = True
        frozen = freeze_heap()
        log.info("heap frozen after start-up: %d objects", frozen)

    async def _revoke_command(self, key: str) -> None:
        """Tombstone control command ``key`` (a one-shot command this worker applied)."""
        topic = control_topic(self.settings.topic_prefix)
        try:
            sent = await LazyProducer(self.app).send(topic, key.encode(), None, None, None, None)
            await sent
        except Exception as exc:  # it then expires with its TTL
            log.warning("could not revoke control command %s: %s", key, exc)

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def drain(self) -> None:
        """Shutdown: stop fetching, finish what runs (bounded), commit the finished prefix,
        stop the jobs, the background loops and the changelog writers."""
        if self.draining:
            return
        if self.control is not None:
            self.control.release_all()
        await self.partitions.drain()
        for fr in self.families.values():
            await fr.lanes.stop()
            await fr.batches.stop()
        await stop_jobs(self.registry)
        for task in self._tasks:
            task.cancel()
        await self.heartbeat.leave()
        for fr in self.families.values():
            for writer in fr.writers:
                await writer.stop()
        if self.status is not None:
            await self.status.stop()
        if self.control is not None:
            self.control.stop()

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
            "partitions_in_sequence": self.sequencer.in_sequence(),
            "control_loaded": self.control is None or self.control.loaded,
        }

    def _expedite(self, event_id: str) -> None:
        """A cancelled event held in a retry tier runs now (and is acked as cancelled)."""

        def match(entry: Any) -> bool:
            return bool(h.decode(entry.headers).get(h.EVENT_ID) == event_id)

        for fr in self.families.values():
            for scheduler in fr.schedulers:
                scheduler.expedite(match)

    def paused_families(self) -> list[str]:
        return self.control.paused_families() if self.control is not None else []


class _PauseSide:
    """What ``WorkerControl`` pauses and resumes through (the consumer, the rebalancer)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def pause(self, tps: Collection[TP]) -> None:
        self._runtime.consumer.pause(tps)

    def resume_tp(self, tp: TP) -> None:
        self._runtime.partitions.resume(tp)

    def assignment(self) -> set[TP]:
        return self._runtime.consumer.assignment()


def _control_plane(
    settings: Settings, families: list[Family], clock_ms: Callable[[], int], *, enabled: bool
) -> tuple[WorkerControl | None, StatusRecorder | None]:
    if not enabled:
        return None, None
    from confluent_kafka import Producer

    from streams.broker.clients import base_conf

    conf = base_conf(settings)
    view = ControlView(clock_ms)
    follower = TopicFollower(
        conf, control_topic(settings.topic_prefix), view, name=f"control-{settings.worker_id}"
    )
    topics_of = {
        f.name: (lambda t: (t.main, *t.lane_topics, *t.retries))(f.topics(settings.topic_prefix))
        for f in families
    }
    control = WorkerControl(view=view, follower=follower, topics_of=topics_of, clock_ms=clock_ms)
    status = None
    if settings.status_tracking:
        status = StatusRecorder(
            producer=None,
            topic=status_topic(settings.topic_prefix),
            clock_ms=clock_ms,
            linger_s=settings.status_linger_ms / 1000,
        )
        status.producer = Producer(
            {
                **conf,
                "acks": "all",
                "linger.ms": 20,
                "compression.type": "lz4",
                "delivery.report.only.error": True,  # no Python callback per record
                "on_delivery": status.delivered,
            }
        )
    return control, status
