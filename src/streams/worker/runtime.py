"""The worker's runtime: one processor per family over a faust app, started, watched and
drained.

A thin front over its parts: ``composition`` builds the families, ``compat`` is the one
view of faust's consumer (and every workaround of its internals), ``sequencer`` decides
which record is admitted and when a partition is sought back, ``rebalance`` carries out
the assignment, revoke and shutdown protocol, and ``loops`` runs the background work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import Any, cast

import faust

from streams.catalog import Catalog
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
from streams.worker.factory import create_app
from streams.worker.heartbeat import HeartbeatLoop, worker_identity
from streams.worker.ledger import Ledger
from streams.worker.processor import Decoder
from streams.worker.rebalance import Rebalancer
from streams.worker.sequencer import Sequencer


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
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.registry = registry
        self.metrics = metrics
        self.clock_ms = clock_ms
        self.app = app or create_app(settings, catalog)
        chosen = [catalog.family(name) for name in families or list(catalog.families)]
        self.breakers = Breakers(partial(breaker_policy, catalog, registry), metrics, clock_ms)
        topics = {
            name for family in chosen for name in family.topics(settings.topic_prefix).all[:-1]
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
        builder = FamilyBuilder(
            app=self.app,
            settings=settings,
            metrics=metrics,
            registry=registry,
            decoder=decoder,
            breakers=self.breakers,
            clock_ms=clock_ms,
            hooks=self.partitions,
        )
        self.families: dict[str, FamilyRuntime] = {}
        for family in chosen:
            fr = self.families[family.name] = builder.build(family)
            self.partitions.add_family(fr)
        self.watchdog = loops.Watchdog(
            sequencer=self.sequencer,
            consumer=self.consumer,
            saturated=lambda tp: self.partitions.by_topic[tp.topic].lanes.saturated(),
            metrics=metrics,
        )
        self.consumer.install(
            on_discarded=self.partitions.on_discarded,
            on_withheld=self.partitions.on_withheld,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
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
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False
        # faust's signal type wants a ``signal`` keyword; our handlers take it in **kwargs
        self.app.on_partitions_revoked.connect(cast(Any, self.partitions.on_revoked))
        self.app.on_partitions_assigned.connect(cast(Any, self.partitions.on_assigned))
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

    def _ledgers(self) -> Iterator[Ledger]:
        return (fr.ledger for fr in self.families.values() if fr.ledger is not None)

    # --- lifecycle ----------------------------------------------------------------------

    async def _boot(self) -> None:
        for fr in self.families.values():
            for writer in fr.writers:
                writer.start()
            for scheduler in fr.schedulers:
                self._spawn(scheduler.run(), f"scheduler.{fr.family.name}")
        await start_jobs(self.registry)
        self._spawn(loops.expire_ledgers(self._ledgers), "ledger.expiry")
        self._spawn(
            loops.watch_lag(
                self.partitions.logs, self.consumer, self.metrics.consumer_lag, self.watchdog
            ),
            "consumer.lag",
        )
        self._spawn(self.heartbeat.run(), "heartbeat")
        self.started = True

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def drain(self) -> None:
        """Shutdown: stop fetching, finish what runs (bounded), commit the finished prefix,
        stop the jobs, the background loops and the changelog writers."""
        if self.draining:
            return
        await self.partitions.drain()
        await stop_jobs(self.registry)
        for task in self._tasks:
            task.cancel()
        await self.heartbeat.leave()
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
            "partitions_in_sequence": self.sequencer.in_sequence(),
        }
