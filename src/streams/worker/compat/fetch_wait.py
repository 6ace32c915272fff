"""Give the worker's aiokafka consumer a configurable fetch max wait.

faust creates it with a hard-coded 1,500 ms. aiokafka keeps one fetch in flight per broker
and leaves out of it every partition whose fetched records are not consumed yet, so while a
worker works through a batch of the main topic a fetch holding only idle partitions (retry
tiers) waited up to 1.5 s at the broker, and new main-topic records waited with it (the
latency stalls of bench P3).
"""

from __future__ import annotations

from typing import Protocol, cast


class _KafkaConsumer(Protocol):
    _fetch_max_wait_ms: int


class _CreateConsumer(Protocol):
    def __call__(self, *args: object, **kwargs: object) -> _KafkaConsumer: ...


class _ConsumerThread(Protocol):
    _create_worker_consumer: _CreateConsumer


class _ThreadedConsumer(Protocol):
    _thread: _ConsumerThread


def set_fetch_max_wait(consumer: object, wait_ms: int) -> None:
    """Create ``consumer``'s (faust's) aiokafka worker consumer with ``wait_ms``."""
    thread = cast(_ThreadedConsumer, consumer)._thread
    create = thread._create_worker_consumer

    def create_worker_consumer(*args: object, **kwargs: object) -> _KafkaConsumer:
        kafka = create(*args, **kwargs)
        kafka._fetch_max_wait_ms = wait_ms  # read when its fetcher starts
        return kafka

    thread._create_worker_consumer = create_worker_consumer
