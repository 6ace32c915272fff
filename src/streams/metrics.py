"""All Prometheus metrics in one typed bundle over an injected registry (style.md).

Tests build ``Metrics(CollectorRegistry())`` so they never share state.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
    3600.0,
    21600.0,
)
_HANDLER_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

_BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
NOT_ADMITTED_REASONS = (
    "not_positioned",
    "not_assigned",
    "draining",
    "redelivered",
    "out_of_sequence",
)
RESEEK_REASONS = ("paused", "cleared", "stalled")


@dataclass(frozen=True)
class Metrics:
    """The worker's metrics. Label names are fixed here, nowhere else."""

    registry: CollectorRegistry
    events: Counter
    handler_duration: Histogram
    end_to_end_latency: Histogram
    retries: Counter
    deferrals: Counter
    dead_letters: Counter
    dead_letter_fingerprints: Counter
    duplicates: Counter
    in_flight: Gauge
    waiting: Gauge
    parked: Gauge
    consumer_lag: Gauge
    oldest_unprocessed_age: Gauge
    breaker_state: Gauge
    breaker_transitions: Counter
    rate_limited: Counter
    ledger_flushes: Counter
    ledger_flush_duration: Histogram
    idempotency_keys: Gauge
    route_failures: Counter
    batch_size: Histogram
    batch_flushes: Counter
    not_admitted: Counter
    reseeks: Counter

    def prime_topic(self, topic: str) -> None:
        """Export the topic's admission and re-seek counters at 0 before any increment: a
        series that appears at 1 hides its first increase from ``increase()`` and alerts."""
        for reason in NOT_ADMITTED_REASONS:
            self.not_admitted.labels(topic, reason)
        for reason in RESEEK_REASONS:
            self.reseeks.labels(topic, reason)

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        reg = registry if registry is not None else CollectorRegistry()
        ns = "streams"
        return cls(
            registry=reg,
            events=Counter(
                "events",
                "Events finished, by family and outcome "
                "(done, retried, deferred, dead_lettered, duplicate; lost: at-most-once only)",
                ["family", "outcome"],
                namespace=ns,
                registry=reg,
            ),
            handler_duration=Histogram(
                "handler_duration_seconds",
                "Handler run time in seconds",
                ["family", "event_type"],
                namespace=ns,
                registry=reg,
                buckets=_HANDLER_BUCKETS_S,
            ),
            end_to_end_latency=Histogram(
                "end_to_end_latency_seconds",
                "Event time (envelope occurred_at_ms) to done, in seconds",
                ["family"],
                namespace=ns,
                registry=reg,
                buckets=_LATENCY_BUCKETS_S,
            ),
            retries=Counter(
                "retries",
                "Events sent to a retry tier after a failure",
                ["family", "tier"],
                namespace=ns,
                registry=reg,
            ),
            deferrals=Counter(
                "deferrals",
                "Events deferred to a retry tier without using an attempt",
                ["family", "reason"],
                namespace=ns,
                registry=reg,
            ),
            dead_letters=Counter(
                "dead_letters",
                "Events sent to the DLQ, by reason",
                ["family", "reason"],
                namespace=ns,
                registry=reg,
            ),
            dead_letter_fingerprints=Counter(
                "dead_letter_fingerprints",
                "Events sent to the DLQ, by reason and error fingerprint (one series per "
                "distinct error, as `streams dlq stats` groups them)",
                ["family", "reason", "fingerprint"],
                namespace=ns,
                registry=reg,
            ),
            duplicates=Counter(
                "duplicates_skipped",
                "Events skipped because their id was already done",
                ["family"],
                namespace=ns,
                registry=reg,
            ),
            in_flight=Gauge(
                "in_flight",
                "Events admitted and not yet finished (running or queued by key)",
                ["family"],
                namespace=ns,
                registry=reg,
            ),
            parked=Gauge(
                "parked",
                "Events parked in memory behind a retrying event of their key (strict order)",
                ["family"],
                namespace=ns,
                registry=reg,
            ),
            waiting=Gauge(
                "waiting",
                "Retry-tier records held until their due time",
                ["family"],
                namespace=ns,
                registry=reg,
            ),
            consumer_lag=Gauge(
                "consumer_lag",
                "High watermark minus next offset to read, per partition",
                ["topic", "partition"],
                namespace=ns,
                registry=reg,
            ),
            oldest_unprocessed_age=Gauge(
                "oldest_unprocessed_age_seconds",
                "Seconds since the record timestamp of the oldest admitted, unfinished record, "
                "per partition (0 when none)",
                ["topic", "partition"],
                namespace=ns,
                registry=reg,
            ),
            breaker_state=Gauge(
                "circuit_state",
                "Circuit breaker state (0 closed, 1 half-open, 2 open)",
                ["dependency"],
                namespace=ns,
                registry=reg,
            ),
            breaker_transitions=Counter(
                "circuit_transitions",
                "Circuit breaker transitions",
                ["dependency", "from_state", "to_state"],
                namespace=ns,
                registry=reg,
            ),
            rate_limited=Counter(
                "rate_limited",
                "Events over a rate limit, by limit and action (defer: waits for its tokens; "
                "reject: sent to the DLQ)",
                ["family", "limit", "action"],
                namespace=ns,
                registry=reg,
            ),
            ledger_flushes=Counter(
                "ledger_flushes",
                "Batches the table writers sent to their changelogs (done-markers and "
                "rate-limit buckets), one record per key and partition",
                ["family"],
                namespace=ns,
                registry=reg,
            ),
            ledger_flush_duration=Histogram(
                "ledger_flush_seconds",
                "Time from sending a table writer's batch to the broker's acknowledgement of "
                "all of it",
                ["family"],
                namespace=ns,
                registry=reg,
                buckets=_HANDLER_BUCKETS_S,
            ),
            idempotency_keys=Gauge(
                "idempotency_keys",
                "Event ids held in the idempotency index",
                ["family"],
                namespace=ns,
                registry=reg,
            ),
            not_admitted=Counter(
                "records_not_admitted",
                "Records left unacked at admission, by reason "
                "(not_positioned, not_assigned, draining, redelivered, out_of_sequence)",
                ["topic", "reason"],
                namespace=ns,
                registry=reg,
            ),
            reseeks=Counter(
                "partition_reseeks",
                "Partitions sought back to their next expected offset, by reason (paused: fetched "
                "while paused; cleared: dropped from a stream buffer; stalled: found by the "
                "watchdog)",
                ["topic", "reason"],
                namespace=ns,
                registry=reg,
            ),
            route_failures=Counter(
                "route_failures",
                "Failed attempts to produce a retry/DLQ record (retried)",
                ["family"],
                namespace=ns,
                registry=reg,
            ),
            batch_size=Histogram(
                "batch_size_events",
                "Events handed to a batch handler per call",
                ["family", "event_type"],
                namespace=ns,
                registry=reg,
                buckets=_BATCH_SIZE_BUCKETS,
            ),
            batch_flushes=Counter(
                "batch_flushes",
                "Batch handler calls, by why the batch was cut (full: max_events collected; "
                "wait: max_wait_ms after its oldest event arrived)",
                ["family", "event_type", "reason"],
                namespace=ns,
                registry=reg,
            ),
        )
