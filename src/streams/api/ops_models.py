"""Response bodies of the operator routes (their OpenAPI schemas)."""

from __future__ import annotations

from pydantic import BaseModel


class PartitionView(BaseModel):
    partition: int
    committed: int | None
    low: int
    high: int
    lag: int
    oldest_unprocessed_age_ms: int | None


class TopicView(BaseModel):
    topic: str
    role: str
    lag: int
    oldest_unprocessed_age_ms: int | None
    partitions: list[PartitionView]


class FamilyView(BaseModel):
    family: str
    partitions: int
    lag: int
    oldest_unprocessed_age_ms: int | None
    dlq_depth: int
    topics: list[TopicView]
    in_flight: int
    waiting: int
    paused: bool
    workers: list[str]
    owners: dict[str, str]


class FamilyList(BaseModel):
    families: list[FamilyView]
    workers: list[str]


class BreakerRow(BaseModel):
    dependency: str
    workers: dict[str, str]


class WorkerSeen(BaseModel):
    worker_id: str
    at_ms: int


class BreakerList(BaseModel):
    breakers: list[BreakerRow]
    workers: list[WorkerSeen]


class StatsRow(BaseModel):
    family: str
    event_type: str
    completed: int
    throughput_per_min: float
    retries: int
    dead_lettered: int
    failures: int
    cancelled: int
    deferred: int
    avg_wait_ms: float | None
    avg_processing_ms: float | None


class Stats(BaseModel):
    window: str
    until_ms: int
    tenant: str
    by_type: list[StatsRow]


class Bucket(BaseModel):
    limit: str
    scope: str
    partition: int
    capacity: int
    refill_per_s: float
    tokens: float
    updated_ms: int | None
    changelog_offset: int | None
    limited: bool
    next_token_in_ms: int
    on_exceed: str


class RateLimitStatus(BaseModel):
    family: str
    key: str
    at_ms: int
    buckets: list[Bucket]


class RateLimitReset(BaseModel):
    family: str
    key: str
    command: str
    issued_at_ms: int
    expires_at_ms: int
    control_offset: int
    state: str


class ClearResult(BaseModel):
    kind: str
    clear_id: str
    family: str
    actor: str
    at_ms: int
    skipped: int
    ranges: list[dict[str, int | str]]
    outcome: str
