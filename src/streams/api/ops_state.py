"""What the operator routes hold: the Kafka settings and catalog, the cluster reader
(``broker.offsets``), and two views the API process builds by following topics from the
beginning: the live workers (``streams.workers`` heartbeats) and the statistics of the
status records (``streams.status``, ``core.stats``).

``Ops.start`` runs at application start; without Kafka settings (an API serving only the
audit store) the operator routes answer 503.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from confluent_kafka import Producer

from streams.api.problems import Problem
from streams.broker.clients import base_conf
from streams.broker.offsets import ClusterOffsets
from streams.broker.tail import TopicTail
from streams.catalog import Catalog
from streams.control.topics import control_topic, status_topic
from streams.control.writer import ControlWriter
from streams.core import heartbeat, topology
from streams.core.stats import StatusStats
from streams.errors import ConfigError
from streams.settings import Settings

log = logging.getLogger("streams.api")
T = TypeVar("T")


def _wall_ms() -> int:
    return int(time.time() * 1000)


class WorkersView:
    """The last heartbeat of every worker, from ``streams.workers`` (tombstone: gone)."""

    def __init__(self, expire_after: int = heartbeat.DEFAULT_EXPIRE_AFTER) -> None:
        self.expire_after = expire_after
        self._beats: dict[str, heartbeat.Heartbeat] = {}
        self._lock = threading.Lock()

    def apply(self, key: bytes | None, value: bytes | None, _timestamp_ms: int) -> None:
        if key is None:
            return
        if value is None:
            with self._lock:
                self._beats.pop(key.decode(errors="replace"), None)
            return
        try:
            beat = heartbeat.decode(value)
        except heartbeat.BadHeartbeat as exc:
            log.warning("ignoring a heartbeat of %r: %s", key, exc)
            return
        with self._lock:
            self._beats[beat.worker_id] = beat

    def live(self, now_ms: int) -> list[heartbeat.Heartbeat]:
        with self._lock:
            beats = dict(self._beats)
        return heartbeat.live(beats, now_ms, self.expire_after)


@dataclass
class Ops:
    settings: Settings
    catalog: Catalog
    clock_ms: Callable[[], int] = _wall_ms
    workers: WorkersView = field(default_factory=WorkersView)
    stats: StatusStats = field(default_factory=StatusStats)
    offsets: ClusterOffsets | None = None
    stats_lock: threading.Lock = field(default_factory=threading.Lock)
    _tails: list[TopicTail] = field(default_factory=list)
    _control: ControlWriter | None = None
    _producer: Producer | None = None

    @property
    def group(self) -> str:
        return self.settings.app_id

    def start(self) -> None:
        self.offsets = ClusterOffsets(self.settings, self.group)
        prefix = self.settings.topic_prefix

        def on_status(key: bytes | None, value: bytes | None, ts_ms: int) -> None:
            with self.stats_lock:
                self.stats.apply_raw(value)

        self._tails = [
            TopicTail(self.settings, topology.workers_topic(prefix), self.workers.apply),
            TopicTail(self.settings, status_topic(prefix), on_status),
        ]
        for tail in self._tails:
            tail.start()

    def stop(self) -> None:
        for tail in self._tails:
            tail.stop()
        if self.offsets is not None:
            self.offsets.close()
        if self._control is not None:
            self._control.close()
        if self._producer is not None:
            self._producer.flush(5.0)

    def produce_sync(self, topic: str, key: bytes, value: bytes) -> int:
        """Write one record (acks=all) and wait for it; its offset. TopologyError if refused."""
        from streams.errors import TopologyError

        with self.stats_lock:
            if self._producer is None:
                self._producer = Producer(
                    base_conf(self.settings, **{"acks": "all", "enable.idempotence": True})
                )
        producer = self._producer
        result: dict[str, Any] = {}

        def delivered(err: Any, msg: Any) -> None:
            result["err"], result["offset"] = err, None if err else msg.offset()

        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.flush(self.settings.publish_timeout_s)
        if "err" not in result:
            raise TopologyError(f"no acknowledgement from {topic} in time")
        if result["err"] is not None:
            raise TopologyError(f"{topic} refused the record: {result['err']}")
        return int(result["offset"])

    async def produce(self, topic: str, key: bytes, value: bytes) -> int:
        return await self.cluster(lambda _offsets: self.produce_sync(topic, key, value))

    def control_writer(self) -> ControlWriter:
        """The writer of control commands (acks=all), made on first use."""
        with self.stats_lock:
            if self._control is None:
                self._control = ControlWriter(
                    base_conf(self.settings), control_topic(self.settings.topic_prefix)
                )
            return self._control

    def family(self, name: str) -> Any:
        fam = self.catalog.families.get(name)
        if fam is None:
            raise Problem(404, "unknown-family", f"no family {name!r} in the catalog")
        return fam

    async def cluster(self, call: Callable[[ClusterOffsets], T]) -> T:
        """``call(offsets)`` in a thread; a cluster that does not answer is a 503."""
        from streams.errors import BrokerUnavailable, TopologyError

        offsets = self.offsets
        if offsets is None:
            raise Problem(503, "kafka-unavailable", "the operator views are not started")
        try:
            return await asyncio.to_thread(call, offsets)
        except (TopologyError, BrokerUnavailable) as exc:
            raise Problem(503, "kafka-unavailable", str(exc)) from None


OPS = web.AppKey("ops", Ops)


def install(app: web.Application, settings: Settings | None, catalog: Catalog | None) -> None:
    """Start the operator views with the application (nothing when Kafka is not configured)."""
    if settings is None or catalog is None:
        return

    ops = app[OPS] = Ops(settings, catalog)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        try:
            settings.bootstrap  # noqa: B018 - ConfigError when no cluster is named
        except ConfigError as exc:
            log.warning("no operator views: %s (the operator routes answer 503)", exc)
            yield
            return
        await asyncio.to_thread(ops.start)
        try:
            yield
        finally:
            await asyncio.to_thread(ops.stop)

    app.cleanup_ctx.append(lifecycle)


def ops_of(request: web.Request) -> Ops:
    ops = request.app.get(OPS)
    if ops is None:
        raise Problem(503, "kafka-unavailable", "this API runs without Kafka settings")
    return ops
