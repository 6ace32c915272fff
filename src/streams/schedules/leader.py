"""The firing loop: the worker that owns partition 0 of the schedules topic fires them.

Leadership follows Kafka's group protocol: every worker joins the consumer group
``<app_id>.schedules`` on the one-partition state topic; the member assigned partition 0 is
the leader. Ticks of a paused schedule are passed over (the cursor moves, nothing fires).
On assignment it reads the state topic from the beginning up to the end it saw
at that moment (the cursors every earlier leader acknowledged), then fires: for each
enabled, unpaused schedule, ``plan_due`` gives the ticks due since its cursor; each tick's
event is published with the deterministic id ``schedule:<name>:<tick_ms>`` and, once
acknowledged, the cursor record ``tick/<name>`` is written and acknowledged.

Exactly once per tick: a leader that dies between publishing and writing the cursor makes
the next leader fire that tick again, with the same event id and key, so the family's
idempotency ledger skips the copy (never run twice). The same holds for a zombie leader
still firing while the group has moved on. A tick is never lost: the cursor moves only
after the event is acknowledged. Leadership is lost after ``session_timeout_s`` without
heartbeats (a SIGKILLed leader); the catch-up policy decides what the next leader fires.

Runs in a thread of its own (confluent-kafka consumer and the SDK publisher), beside the
faust worker; ``clock_ms`` is injectable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from streams.core.topology import family_of_event_type, schedules_topic
from streams.errors import StreamsError
from streams.schedules.config import Schedule, ScheduleSettings, load_schedules
from streams.schedules.plan import plan_due
from streams.schedules.state import ScheduleState, tick_record
from streams.settings import Settings

log = logging.getLogger(__name__)


def wall_ms() -> int:
    return int(time.time() * 1000)


class ScheduleLeader:
    def __init__(
        self,
        settings: Settings,
        schedules: list[Schedule],
        *,
        publisher: Any,
        worker_id: str,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings
        self.schedules = schedules
        self.publisher = publisher
        self.worker_id = worker_id
        self.clock_ms = clock_ms
        self.topic = schedules_topic(settings.topic_prefix)
        self.state = ScheduleState()
        self.leader = False
        self._loading_until: int | None = None  # offset to reach before firing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streams-schedules", daemon=True)
        self.fired = 0

    def start(self) -> ScheduleLeader:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        close = getattr(self.publisher, "close", None)
        if close is not None:
            close()

    # --- group membership ---------------------------------------------------------------

    def _consumer(self) -> Consumer:
        s = self.settings
        return Consumer(
            {
                "bootstrap.servers": s.bootstrap,
                "group.id": f"{s.app_id}.schedules",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(s.session_timeout_s * 1000),
                "heartbeat.interval.ms": max(500, int(s.session_timeout_s * 1000) // 6),
                "client.id": f"schedules-{self.worker_id}",
                **s.kafka_security(),
            }
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=10)
        self.state = ScheduleState()
        self._loading_until = high
        for p in partitions:
            p.offset = OFFSET_BEGINNING
        consumer.assign(partitions)
        log.info("schedules: %s owns the schedules partition; reading the state", self.worker_id)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions and self.leader:
            log.info("schedules: %s is no longer the leader", self.worker_id)
        self.leader = False
        self._loading_until = None

    # --- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer()
        producer = Producer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                **self.settings.kafka_security(),
            }
        )
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(100, timeout=0.1):
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("schedules: consumer error %s", err)
                        continue
                    self.state.apply(msg.key(), msg.value())
                    if (
                        self._loading_until is not None
                        and (msg.offset() or 0) + 1 >= self._loading_until
                    ):
                        self._become_leader()
                loading = self._loading_until is not None and not self.leader
                if loading and (self._loading_until == 0 or self._caught_up(consumer)):
                    self._become_leader()
                if self.leader:
                    try:
                        self._fire_due(producer)
                    except Exception as exc:  # broker trouble: the cursor did not move
                        log.warning("schedules: firing failed (%r); retrying in 1 s", exc)
                        self._stop.wait(1.0)
        except Exception:
            log.exception("schedules: the firing loop failed; leaving the group")
        finally:
            self.leader = False
            consumer.close()
            producer.flush(10)

    def _caught_up(self, consumer: Consumer) -> bool:
        try:
            (pos,) = consumer.position([TopicPartition(self.topic, 0)])
        except Exception:
            return False
        return (
            pos.offset >= 0
            and self._loading_until is not None
            and pos.offset >= self._loading_until
        )

    def _become_leader(self) -> None:
        if not self.leader:
            self.leader = True
            log.info(
                "schedules: %s is the leader (cursors: %s)", self.worker_id, self.state.cursors
            )

    def _fire_due(self, producer: Producer) -> None:
        for schedule in self.schedules:
            if not self.leader or self._stop.is_set():
                return
            if not schedule.enabled:
                continue
            now = self.clock_ms()
            cursor = self.state.cursors.get(schedule.name)
            plan = plan_due(
                schedule.cron,
                schedule.zone,
                cursor_ms=cursor,
                now_ms=now,
                catch_up=schedule.catch_up,
                max_catch_up=schedule.max_catch_up,
                grace_ms=schedule.grace_ms,
            )
            if schedule.name in self.state.paused:  # ticks while paused are passed over
                if plan.cursor_ms != cursor:
                    self._write_cursor(producer, schedule.name, plan.cursor_ms)
                continue
            if plan.dropped:
                log.warning(
                    "schedules: %s: %d missed ticks not fired (catch_up=%s)",
                    schedule.name,
                    plan.dropped,
                    schedule.catch_up,
                )
            for tick in plan.fire:
                self.publisher.publish(
                    schedule.event_type,
                    schedule.payload_for(tick),
                    event_id=schedule.event_id(tick),
                )
                self.fired += 1
                self._write_cursor(producer, schedule.name, tick)
            if plan.cursor_ms != cursor and (not plan.fire or plan.fire[-1] != plan.cursor_ms):
                self._write_cursor(producer, schedule.name, plan.cursor_ms)

    def _write_cursor(self, producer: Producer, name: str, tick_ms: int) -> None:
        key, value = tick_record(name, tick_ms, self.worker_id, self.clock_ms())
        errors: list[Any] = []
        producer.produce(
            self.topic, value, key, on_delivery=lambda err, _m: errors.append(err) if err else None
        )
        if producer.flush(30) != 0 or errors:
            raise RuntimeError(f"schedules: cursor of {name} not acknowledged: {errors}")
        self.state.cursors[name] = tick_ms  # also read back from the topic; max() keeps it


def start_leader(settings: Settings) -> ScheduleLeader | None:
    """The firing loop of this worker, or None when schedules are off, none are
    configured, or the state topic does not exist (``streams topics apply`` creates it)."""
    conf = ScheduleSettings()
    if not conf.schedules_enabled:
        return None
    schedules = load_schedules(conf.schedules_path)
    if not any(s.enabled for s in schedules):
        return None
    from confluent_kafka.admin import AdminClient

    topic = schedules_topic(settings.topic_prefix)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap, **settings.kafka_security()})
    if topic not in admin.list_topics(timeout=10).topics:
        log.warning("schedules: topic %s missing (streams topics apply); not firing", topic)
        return None
    from streams.publish.publisher import Publisher

    worker_id = settings.worker_id or f"pid-{os.getpid()}"
    publisher = Publisher(settings, producer_name=f"streams.schedules.{worker_id}")
    usable = []
    for s in schedules:  # a schedule whose event this catalog cannot publish is left out
        try:
            publisher.prepare(s.event_type, s.payload_for(0), event_id=s.event_id(0))
            usable.append(s)
            family = publisher.catalog.family(family_of_event_type(s.event_type))
            if not family.idempotency.enabled:
                log.warning(
                    "schedules: %s: family %s has idempotency off, so a tick fired "
                    "again by a new leader is not deduplicated",
                    s.name,
                    family.name,
                )
        except StreamsError as exc:
            log.error("schedules: %s left out: %s", s.name, exc)
    schedules = usable
    log.info("schedules: %d loaded from %s", len(schedules), conf.schedules_path)
    return ScheduleLeader(settings, schedules, publisher=publisher, worker_id=worker_id).start()
