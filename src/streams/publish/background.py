"""Non-blocking emit: hand an event over and go on, whatever the broker is doing.

For side channels the caller must never wait on, such as audit logging (seed 004: "audit
logging failures don't affect main operations"). ``BackgroundEmitter.emit`` validates and
encodes the event (``Publisher.prepare``), appends it to a bounded local buffer and
returns, in microseconds, even while the broker is down. A daemon thread hands buffered
records to a producer of its own and serves its delivery reports. Nothing is ever raised
into the caller: every failure goes to ``on_failure(EmitFailure)`` and to
``streams_emit_failures_total{reason}``.

- ``capacity`` bounds the events accepted and not yet acknowledged by the broker
  (buffered + in flight). When it is full, **the newest event is dropped**: ``emit``
  returns None, reason ``buffer_full``. Events already accepted keep their place and
  their order, and the caller's cost stays constant; the drop is visible in the metric
  and the callback (an application that must keep every event uses ``Publisher.publish``
  and handles the error itself).
- An accepted event is retried until the broker acknowledges it: librdkafka retries
  within ``delivery_timeout_s``; an event that times out (a long outage) goes back to the
  buffer after ``retry_backoff_s`` (reason ``delivery``, ``will_retry=True``). Order
  between retried and newer events is then not kept. Only errors that no retry can fix
  (record too large, not authorised) drop the event (``will_retry=False``).
- Invalid events (unknown type, bad payload) are reported with reason ``invalid``.
- ``close(timeout_s)`` stops accepting, waits for the buffer to drain within the bound,
  and reports what is left (reason ``closed``); it returns that count.

Each event keeps its event id through retries, so a duplicate produced by a retry after
a lost acknowledgement is dropped by the consumer's idempotency check.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from streams.errors import StreamsError
from streams.publish.publisher import PreparedRecord, Publisher

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000
DEFAULT_DELIVERY_TIMEOUT_S = 60.0
DEFAULT_RETRY_BACKOFF_S = 1.0
_POLL_S = 0.05
_PERMANENT_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)


class EmitFailure(NamedTuple):
    """What ``on_failure`` receives: which event, why (``invalid``, ``buffer_full``,
    ``delivery``, ``closed``), the error text, and whether it will be retried."""

    event_id: str | None
    event_type: str
    reason: str
    error: str
    will_retry: bool


OnFailure = Callable[[EmitFailure], None]


@dataclass(frozen=True)
class EmitterMetrics:
    accepted: Counter
    delivered: Counter
    failures: Counter
    buffered: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EmitterMetrics:
        ns = "streams"
        return cls(
            accepted=Counter(
                "emit_accepted", "Events accepted by emit()", namespace=ns, registry=registry
            ),
            delivered=Counter(
                "emit_delivered",
                "Emitted events acknowledged by the broker",
                namespace=ns,
                registry=registry,
            ),
            failures=Counter(
                "emit_failures",
                "emit() failures by reason (invalid, buffer_full, delivery, closed)",
                ["reason"],
                namespace=ns,
                registry=registry,
            ),
            buffered=Gauge(
                "emit_buffered",
                "Emitted events not yet acknowledged (buffered or in flight)",
                namespace=ns,
                registry=registry,
            ),
        )


_metrics: dict[int, EmitterMetrics] = {}
_metrics_lock = threading.Lock()


def emitter_metrics(registry: CollectorRegistry) -> EmitterMetrics:
    """The emitter metrics on ``registry`` (created once per registry, shared by emitters)."""
    with _metrics_lock:
        found = _metrics.get(id(registry))
        if found is None:
            found = _metrics[id(registry)] = EmitterMetrics.create(registry)
        return found


class _Item(NamedTuple):
    record: PreparedRecord
    event_type: str


class BackgroundEmitter:
    """Non-blocking emit over ``publisher`` (see the module docstring).

    ``publisher`` validates and encodes, and lends its producer configuration; delivery
    uses a producer of this emitter's own. ``registry`` receives the metrics (default:
    prometheus_client's global registry). Thread-safe; usable from asyncio code.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        capacity: int = DEFAULT_CAPACITY,
        on_failure: OnFailure | None = None,
        delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
        retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S,
        registry: CollectorRegistry | None = None,
        producer_conf: Mapping[str, Any] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.publisher = publisher
        self.capacity = capacity
        self.on_failure = on_failure
        self.retry_backoff_s = retry_backoff_s
        self.metrics = emitter_metrics(registry if registry is not None else REGISTRY)
        conf = {
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "queue.buffering.max.messages": max(capacity, 1000),
            **(producer_conf or {}),
        }
        self._producer = Producer(publisher.producer_config(conf))
        self._lock = threading.Condition()
        self._queue: collections.deque[_Item] = collections.deque()
        self._retry: list[tuple[float, _Item]] = []
        self._pending = 0  # accepted, not yet acknowledged nor given up
        self._closing = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streams-emitter", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Events accepted and not yet acknowledged (buffered, in flight, or to retry)."""
        return self._pending

    # --- the caller's side -----------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        key: str | bytes | None = None,
        event_id: str | None = None,
    ) -> str | None:
        """Accept an event for background delivery; returns its event id, or None when it
        was not accepted (invalid, buffer full, closed: reported to ``on_failure``).
        Never raises and never waits for the broker."""
        try:
            record = self.publisher.prepare(event_type, payload, key=key, event_id=event_id)
        except StreamsError as exc:
            self._report(EmitFailure(event_id, event_type, "invalid", str(exc), False))
            return None
        except Exception as exc:  # a bug in a payload's types must not reach the caller
            self._report(EmitFailure(event_id, event_type, "invalid", repr(exc), False))
            return None
        with self._lock:
            if self._closing:
                reason, error = "closed", "the emitter is closed"
            elif self._pending >= self.capacity:
                reason, error = "buffer_full", f"{self.capacity} events already buffered"
            else:
                self._queue.append(_Item(record, event_type))
                self._pending += 1
                self._lock.notify()
                reason = ""
        if reason:
            self._report(EmitFailure(record.event_id, event_type, reason, error, False))
            return None
        self.metrics.accepted.inc()
        self.metrics.buffered.inc()
        return record.event_id

    def close(self, timeout_s: float = 10.0) -> int:
        """Stop accepting, deliver what is buffered within ``timeout_s``; returns (and
        reports, reason ``closed``) how many events were left undelivered."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._closing = True
            self._lock.notify()
            while self._pending and time.monotonic() < deadline:
                self._lock.wait(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        self._stopped.set()
        self._thread.join()
        self._producer.purge()
        self._producer.poll(0)  # purged records come back to the queue here
        with self._lock:
            left = [item for _, item in self._retry] + list(self._queue)
            self._retry.clear()
            self._queue.clear()
            undelivered = self._pending
        for item in left:
            self._report(
                EmitFailure(item.record.event_id, item.event_type, "closed", "not delivered", False)
            )
        return undelivered

    # --- the delivery thread ---------------------------------------------------------------

    def _take(self) -> list[_Item]:
        with self._lock:
            if not self._queue and not self._due_retries():
                self._lock.wait(_POLL_S)
                self._due_retries()
            items = list(self._queue)
            self._queue.clear()
            return items

    def _due_retries(self) -> bool:
        """Move retries whose backoff has passed to the queue (lock held)."""
        now = time.monotonic()
        due = [item for at, item in self._retry if at <= now]
        if due:
            self._retry = [(at, item) for at, item in self._retry if at > now]
            self._queue.extend(due)
        return bool(due)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                for index, item in enumerate(items := self._take()):
                    if not self._produce(item):
                        with self._lock:  # librdkafka's queue is full: keep the rest
                            self._queue.extendleft(reversed(items[index:]))
                        break
                self._producer.poll(0 if self._queue else _POLL_S)
            except Exception:  # never let the thread die: log and keep serving
                log.exception("emitter: delivery loop error")

    def _produce(self, item: _Item) -> bool:
        rec = item.record
        try:
            self._producer.produce(
                rec.topic,
                value=rec.value,
                key=rec.key,
                headers=cast(Any, rec.headers),
                on_delivery=lambda err, msg: self._delivered(item, err, msg),
            )
        except BufferError:
            return False
        return True

    def _delivered(self, item: _Item, err: KafkaError | None, _msg: Message | None) -> None:
        if err is None:
            with self._lock:
                self._pending -= 1
                self._lock.notify_all()
            self.metrics.delivered.inc()
            self.metrics.buffered.dec()
            return
        if err.code() == KafkaError._PURGE_QUEUE or err.code() == KafkaError._PURGE_INFLIGHT:
            with self._lock:
                self._queue.append(item)  # close() reports it
            return
        retry = err.code() not in _PERMANENT_CODES and not self._closing
        if retry:
            with self._lock:
                self._retry.append((time.monotonic() + self.retry_backoff_s, item))
        else:
            with self._lock:
                self._pending -= 1
                self._lock.notify_all()
            self.metrics.buffered.dec()
        failure = EmitFailure(
            item.record.event_id, item.event_type, "delivery", f"{err.name()}: {err.str()}", retry
        )
        self._report(failure)

    def _report(self, failure: EmitFailure) -> None:
        self.metrics.failures.labels(failure.reason).inc()
        if self.on_failure is None:
            log.warning("emit %s (%s): %s", failure.reason, failure.event_id, failure.error)
            return
        try:
            self.on_failure(failure)
        except Exception:
            log.exception("emit: the on_failure callback raised")
