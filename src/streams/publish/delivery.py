"""Delivery bookkeeping: a verdict per record, the error each Kafka failure means.

librdkafka reports every record's fate in a delivery callback on the thread that polls
the producer (``poll_loop``, or a caller's thread that polls while the local queue is
full). ``Pending`` collects those verdicts for one call; the caller reads a snapshot of
them (``outcome``) when all have arrived or its timeout passed. ``error_for`` names what
a Kafka error means to a caller: ``BrokerUnavailable`` (not acknowledged, maybe later) or
``DeliveryFailed`` (refused). ``Health`` keeps the producer's last fatal error.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import cast

from confluent_kafka import KafkaError, Message, Producer

from streams.errors import BatchPublishError, BrokerUnavailable, DeliveryFailed, PublishError
from streams.publish.outgoing import PublishResult

__all__ = ["Health", "Pending", "PendingPool", "error_for", "poll_loop"]

log = logging.getLogger("streams.publish.publisher")  # one logger for the whole publisher

POLL_INTERVAL_S = 0.1

_UNAVAILABLE_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)


def error_for(err: KafkaError, topic: str) -> PublishError:
    """The publisher error for a failed delivery: BrokerUnavailable or DeliveryFailed."""
    code = err.code()
    detail = f"{err.name()}: {err.str()}"
    if code in _UNAVAILABLE_CODES:
        return BrokerUnavailable(f"{topic}: broker unavailable or not acknowledging ({detail})")
    if code in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART):
        return DeliveryFailed(
            f"{topic}: topic does not exist ({detail}); create it with `streams topics apply`"
        )
    if code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE):
        return DeliveryFailed(f"{topic}: record larger than the topic accepts ({detail})")
    return DeliveryFailed(f"{topic}: delivery failed ({detail})")


class Pending:
    """The deliveries of one call: a verdict per record, a done signal.

    Delivery callbacks only store the message or the error; ``outcome`` builds the results
    on the caller's side. ``on_done`` runs once, when every record has a verdict.
    ``callbacks[i]`` is record i's delivery callback; they are made once per object and a
    ``PendingPool`` reuses the object for later calls, so a batch of 50,000 does not make
    50,000 new callback objects for the garbage collector to promote and walk.
    """

    __slots__ = (
        "_count",
        "_total",
        "callbacks",
        "done",
        "errors",
        "event_ids",
        "on_done",
        "positions",
    )

    def __init__(self, event_ids: list[str], on_done: Callable[[], None] | None = None) -> None:
        self.callbacks: list[Callable[[KafkaError | None, Message], None]] = []
        self.reset(event_ids, on_done)

    def reset(self, event_ids: list[str], on_done: Callable[[], None] | None = None) -> Pending:
        """Ready for a new call's records (only once every verdict of the last arrived)."""
        callbacks = self.callbacks
        for i in range(len(callbacks), len(event_ids)):
            callbacks.append(partial(Pending.deliver, self, i))  # one object each
        self.event_ids = event_ids
        # (topic, partition, offset, timestamp_ms) per acknowledged record: plain tuples of
        # atomic values, which the garbage collector stops tracking (big batches stay cheap)
        self.positions: list[tuple[str, int, int, int] | None] = [None] * len(event_ids)
        self.errors: dict[int, PublishError] = {}
        self._total = len(event_ids)
        self._count = itertools.count(1)  # next() is atomic: no lock on the hot path
        self.done = threading.Event()
        self.on_done = on_done
        return self

    def deliver(self, index: int, err: KafkaError | None, msg: Message) -> None:
        """The delivery callback of record ``index`` (``callbacks[index]``).

        Reads nothing of ``self`` after counting its verdict: once the last verdict is
        counted the object may be reset for another call (``PendingPool``)."""
        total, count = self._total, self._count
        if err is None:
            offset = msg.offset()
            self.positions[index] = (
                msg.topic() or "",
                msg.partition() or 0,
                -1 if offset is None else offset,
                msg.timestamp()[1],
            )
        else:
            self.errors[index] = error_for(err, msg.topic() or "?")
        if next(count) == total:
            self._finish()

    def fail_unsent(self, index: int, error: PublishError) -> None:
        """Record an item the producer refused locally (never enqueued)."""
        total, count = self._total, self._count
        self.errors[index] = error
        if next(count) == total:
            self._finish()

    def _finish(self) -> None:
        on_done = self.on_done  # read first: once done is set the object may be reused
        self.done.set()
        if on_done is not None:
            on_done()

    def outcome(
        self, waited_s: float
    ) -> tuple[list[PublishResult | None], dict[int, PublishError]]:
        """A snapshot: results by index (None unless acknowledged) and errors by index.

        A record still without a verdict (the caller stopped waiting after ``waited_s``)
        gets BrokerUnavailable; late callbacks cannot change the snapshot.
        """
        positions = list(self.positions)
        errors = dict(self.errors)
        if not errors and None not in positions:  # the common case: every one acknowledged
            acked = cast(list[tuple[str, int, int, int]], positions)
            new = tuple.__new__  # PublishResult's own __new__ is a Python call per result
            return [
                new(PublishResult, (t, p, o, eid, ts))
                for (t, p, o, ts), eid in zip(acked, self.event_ids, strict=True)
            ], {}
        results: list[PublishResult | None] = []
        for i, position in enumerate(positions):
            if i in errors:
                results.append(None)
            elif position is None:
                errors[i] = BrokerUnavailable(
                    f"no acknowledgement within {waited_s:g}s; the record may still be "
                    "delivered later by the producer"
                )
                results.append(None)
            else:
                topic, partition, offset, timestamp_ms = position
                results.append(
                    PublishResult(topic, partition, offset, self.event_ids[i], timestamp_ms)
                )
        return results, dict(sorted(errors.items()))

    def single(self, waited_s: float) -> PublishResult:
        """The one record's result, or its error raised."""
        results, errors = self.outcome(waited_s)
        if errors:
            raise errors[0]
        result = results[0]
        assert result is not None
        return result

    def every(self, waited_s: float) -> list[PublishResult]:
        """Every record's result, or BatchPublishError(sent=True) when any has an error."""
        results, errors = self.outcome(waited_s)
        if errors:
            raise BatchPublishError(errors, results, sent=True)
        return results  # type: ignore[return-value] # no errors: every slot holds a result


class PendingPool:
    """Reusable ``Pending`` objects (with their callbacks) of one publisher; thread-safe.

    ``give`` takes one back only when every verdict of its call has arrived (no late
    delivery callback can reach it any more); one whose caller stopped waiting is dropped.
    """

    MAX_FREE = 4

    def __init__(self) -> None:
        self._free: list[Pending] = []
        self._lock = threading.Lock()

    def take(self, event_ids: list[str], on_done: Callable[[], None] | None = None) -> Pending:
        with self._lock:
            pending = self._free.pop() if self._free else None
        if pending is None:
            return Pending(event_ids, on_done)
        return pending.reset(event_ids, on_done)

    def give(self, pending: Pending) -> None:
        if not pending.done.is_set():
            return
        pending.reset([])  # keep no ids or positions of the finished call
        with self._lock:
            if len(self._free) < self.MAX_FREE:
                self._free.append(pending)


class Health:
    """The producer's error callback and its last fatal error (none: healthy)."""

    def __init__(self) -> None:
        self.fatal: KafkaError | None = None

    def on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
            log.error("publisher: fatal producer error: %s", err.str())
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            log.warning("publisher: %s", err.str())
        else:
            log.debug("publisher: %s", err.str())


def poll_loop(producer: Producer, stop: threading.Event) -> None:
    """Serve delivery callbacks until ``stop`` is set."""
    while not stop.is_set():
        try:
            producer.poll(POLL_INTERVAL_S)
        except Exception:  # a callback raised: keep serving the others
            log.exception("publisher: delivery callback failed")
