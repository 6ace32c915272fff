"""Desired topics vs the cluster: a plan of changes, and what it refuses. Pure.

``diff(desired, observed, allow_repartition=...)`` compares the catalog's topics with what
the cluster reports and returns a ``Plan``. Rules (architecture.md, "Kafka 4.x details"):

- missing topics are created with the catalog's partitions, replication and configs;
- a partition increase remaps keys to partitions, so it is refused unless
  ``allow_repartition``; a decrease is always refused (Kafka cannot lower a count);
- a replication-factor difference is reported, never changed (it needs a reassignment);
- configs the catalog names are compared semantically and set one key at a time; configs
  the catalog does not name are left alone, and topics it does not name are ignored;
- nothing is ever deleted;
- configs Kafka 4 removed are refused, ``segment.bytes`` must be >= 1 MiB;
- every topic of a family must end up with the same partition count (co-partitioning).

``observed`` holds only the dynamic topic configs (the overrides set on the topic).

Longer than ~400 lines on purpose: the rules above are one decision over one pair of inputs,
and the plan's text rendering beside it is what ``topics plan`` prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

REMOVED_CONFIGS_KAFKA4: Mapping[str, str] = {
    "message.format.version": "removed in Kafka 4.0 (KIP-724); the v2 record format is fixed",
    "message.downconversion.enable": "removed in Kafka 4.0 (KIP-724)",
    "message.timestamp.difference.max.ms": (
        "removed in Kafka 4.0 (KIP-937); use message.timestamp.before.max.ms / "
        "message.timestamp.after.max.ms"
    ),
    "log.message.timestamp.difference.max.ms": (
        "a broker setting removed in Kafka 4.0 (KIP-937); use "
        "message.timestamp.before.max.ms / message.timestamp.after.max.ms on the topic"
    ),
    "log.message.format.version": "a broker setting removed in Kafka 4.0 (KIP-724)",
    "log.message.downconversion.enable": "a broker setting removed in Kafka 4.0 (KIP-724)",
}
"""Config names a Kafka 4 broker rejects as unknown topic configs."""

MIN_SEGMENT_BYTES = 1_048_576
"""Kafka 4's lower bound for ``segment.bytes``."""

MAX_TOPIC_NAME_CHARS = 249
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")

# configs whose value is a comma list Kafka treats as a set
_LIST_CONFIGS = frozenset(
    {
        "cleanup.policy",
        "leader.replication.throttled.replicas",
        "follower.replication.throttled.replicas",
    }
)

REASSIGN_HINT = (
    "not changed automatically: an operator changes it with "
    "kafka-reassign-partitions.sh --reassignment-json-file <plan.json> --execute "
    "(or adjusts replication_factor / STREAMS_REPLICATION_FACTOR_OVERRIDE)"
)


class DesiredTopic(Protocol):
    """What the diff needs of a desired topic (``streams.catalog.TopicSpec`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def replication_factor(self) -> int: ...
    @property
    def configs(self) -> dict[str, str]: ...
    @property
    def role(self) -> str: ...
    @property
    def family(self) -> str | None: ...


@dataclass(frozen=True)
class ObservedTopic:
    """A topic as the cluster reports it; ``configs`` = dynamic topic configs only."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionIncrease:
    topic: str
    current: int
    wanted: int


@dataclass(frozen=True)
class ConfigChange:
    """Set ``key`` to ``wanted`` on ``topic``; ``current`` is None when not overridden."""

    topic: str
    key: str
    current: str | None
    wanted: str


@dataclass(frozen=True)
class ReplicationDrift:
    topic: str
    current: int
    wanted: int


@dataclass(frozen=True)
class Refusal:
    """A difference the plan will not act on; ``kind`` groups them for callers."""

    topic: str
    kind: str  # partitions-decrease | partitions-increase | co-partitioning | config | name
    reason: str
    current: int | None = None
    wanted: int | None = None

    @property
    def is_partition_error(self) -> bool:
        return self.kind.startswith("partitions") or self.kind == "co-partitioning"


@dataclass(frozen=True)
class Plan:
    """What ``apply`` would do, and what it refuses to do."""

    creates: tuple[DesiredTopic, ...] = ()
    partition_increases: tuple[PartitionIncrease, ...] = ()
    config_changes: tuple[ConfigChange, ...] = ()
    replication_drifts: tuple[ReplicationDrift, ...] = ()
    refusals: tuple[Refusal, ...] = ()

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @property
    def changes_pending(self) -> bool:
        """Something ``apply`` would change."""
        return bool(self.creates or self.partition_increases or self.config_changes)

    @property
    def in_sync(self) -> bool:
        return not (self.refused or self.changes_pending or self.replication_drifts)

    @property
    def exit_code(self) -> int:
        """CLI convention: 0 in sync, 2 differences pending, 1 refusal."""
        if self.refused:
            return 1
        return 0 if self.in_sync else 2

    def config_changes_by_topic(self) -> dict[str, list[ConfigChange]]:
        out: dict[str, list[ConfigChange]] = {}
        for change in self.config_changes:
            out.setdefault(change.topic, []).append(change)
        return out

    def lines(self) -> list[str]:
        """One line per difference, in a stable order (``+`` create, ``~`` change, ...)."""
        out = [f"+ create {describe_spec(spec)}" for spec in self.creates]
        out += [
            f"~ partitions {p.topic} {p.current} -> {p.wanted} (remaps keys)"
            for p in self.partition_increases
        ]
        out += [
            f"~ config {c.topic} {c.key} {_show(c.current)} -> {c.wanted}"
            for c in self.config_changes
        ]
        out += [
            f"? replication {r.topic} rf {r.current}, catalog wants {r.wanted}: {REASSIGN_HINT}"
            for r in self.replication_drifts
        ]
        out += [f"! refuse {r.topic}: {r.reason}" for r in self.refusals]
        return out

    def problems(self) -> list[str]:
        """Human-readable mismatches, as a worker's startup check reports them."""
        out = [f"missing topic {spec.name} ({_what(spec)})" for spec in self.creates]
        for p in self.partition_increases:
            out.append(
                f"partition count of {p.topic} is {p.current} but the catalog says {p.wanted}"
            )
        for r in self.refusals:
            if r.kind.startswith("partitions"):
                out.append(
                    f"partition count of {r.topic} is {r.current} but the catalog says "
                    f"{r.wanted}: {r.reason}"
                )
            else:
                out.append(f"{r.topic}: {r.reason}")
        for c in self.config_changes:
            out.append(
                f"config drift on {c.topic}: {c.key} is {_show(c.current)}, "
                f"the catalog says {c.wanted}"
            )
        for d in self.replication_drifts:
            out.append(
                f"replication factor of {d.topic} is {d.current} but the catalog says {d.wanted}"
            )
        return out

    def status_of(self, topic: str) -> str:
        """A short status for one desired topic: ``ok``, ``missing``, ``drift: ...``."""
        if any(spec.name == topic for spec in self.creates):
            return "missing"
        notes = [f"refused ({r.kind})" for r in self.refusals if r.topic == topic]
        notes += [
            f"partitions {p.current} -> {p.wanted}"
            for p in self.partition_increases
            if p.topic == topic
        ]
        keys = [c.key for c in self.config_changes if c.topic == topic]
        if keys:
            notes.append("config drift: " + ", ".join(keys))
        notes += [
            f"rf {d.current} (catalog {d.wanted})"
            for d in self.replication_drifts
            if d.topic == topic
        ]
        return "; ".join(notes) if notes else "ok"


def describe_spec(spec: DesiredTopic) -> str:
    """``email.retry.10s (6 partitions, rf 1, cleanup.policy=delete, ...)``."""
    confs = ", ".join(f"{k}={v}" for k, v in sorted(spec.configs.items()))
    return (
        f"{spec.name} ({spec.partitions} partitions, rf {spec.replication_factor}"
        + (f", {confs}" if confs else "")
        + ")"
    )


def _what(spec: DesiredTopic) -> str:
    return f"{spec.role} topic of family {spec.family}" if spec.family else f"{spec.role} topic"


def _show(value: str | None) -> str:
    return "(default)" if value is None else value


def normalise_config(key: str, value: str | None) -> str | None:
    """The value as Kafka means it: list configs as sorted sets, numbers and booleans canonical."""
    if value is None:
        return None
    text = value.strip()
    if key in _LIST_CONFIGS:
        return ",".join(sorted({part.strip().lower() for part in text.split(",") if part.strip()}))
    if re.fullmatch(r"[+-]?\d+", text):
        return str(int(text))
    if text.lower() in ("true", "false"):
        return text.lower()
    return text


def configs_equal(key: str, a: str | None, b: str | None) -> bool:
    return normalise_config(key, a) == normalise_config(key, b)


def validate_spec(spec: DesiredTopic) -> list[Refusal]:
    """What Kafka 4 would reject in a desired topic, before asking it."""
    out: list[Refusal] = []
    name = spec.name
    if not _LEGAL_TOPIC.match(name) or name in (".", "..") or len(name) > MAX_TOPIC_NAME_CHARS:
        out.append(
            Refusal(
                name,
                "name",
                f"not a legal Kafka topic name (letters, digits, '.', '_', '-'; at most "
                f"{MAX_TOPIC_NAME_CHARS} characters): check STREAMS_TOPIC_PREFIX / app id",
            )
        )
    if spec.partitions < 1:
        out.append(Refusal(name, "config", f"partition count must be >= 1, got {spec.partitions}"))
    for key, value in spec.configs.items():
        if key in REMOVED_CONFIGS_KAFKA4:
            out.append(
                Refusal(
                    name,
                    "config",
                    f"config {key}={value} cannot be set: {REMOVED_CONFIGS_KAFKA4[key]}",
                )
            )
    out.extend(_check_segment_bytes(spec))
    out.extend(_check_min_insync(spec))
    return out


def _check_segment_bytes(spec: DesiredTopic) -> list[Refusal]:
    raw = spec.configs.get("segment.bytes")
    if raw is None:
        return []
    try:
        size = int(raw)
    except ValueError:
        return [Refusal(spec.name, "config", f"segment.bytes={raw!r} is not an integer")]
    if size < MIN_SEGMENT_BYTES:
        return [
            Refusal(
                spec.name,
                "config",
                f"segment.bytes={size} is below Kafka 4's minimum of {MIN_SEGMENT_BYTES} (1 MiB)",
            )
        ]
    return []


def _check_min_insync(spec: DesiredTopic) -> list[Refusal]:
    raw = spec.configs.get("min.insync.replicas")
    if raw is None:
        return []
    try:
        min_isr = int(raw)
    except ValueError:
        return [Refusal(spec.name, "config", f"min.insync.replicas={raw!r} is not an integer")]
    if min_isr > spec.replication_factor:
        return [
            Refusal(
                spec.name,
                "config",
                f"min.insync.replicas={min_isr} exceeds the replication factor "
                f"{spec.replication_factor}: producers with acks=all could never write",
            )
        ]
    return []


def _partition_diff(
    spec: DesiredTopic, seen: ObservedTopic, allow_repartition: bool
) -> tuple[PartitionIncrease | None, Refusal | None]:
    if seen.partitions == spec.partitions:
        return None, None
    if seen.partitions > spec.partitions:
        return None, Refusal(
            spec.name,
            "partitions-decrease",
            f"has {seen.partitions} partitions, the catalog wants {spec.partitions}: Kafka "
            "cannot lower a topic's partition count (recreate the topic under a new name, "
            "or restore the catalog's count)",
            seen.partitions,
            spec.partitions,
        )
    change = PartitionIncrease(spec.name, seen.partitions, spec.partitions)
    if allow_repartition:
        return change, None
    return None, Refusal(
        spec.name,
        "partitions-increase",
        f"has {seen.partitions} partitions, the catalog wants {spec.partitions}: raising the "
        "count remaps keys to other partitions (per-key order and table state move); "
        "rerun with --allow-repartition (allow_repartition=True) to accept",
        seen.partitions,
        spec.partitions,
    )


def _config_diff(spec: DesiredTopic, seen: ObservedTopic) -> list[ConfigChange]:
    out = []
    for key in sorted(spec.configs):
        wanted = spec.configs[key]
        current = seen.configs.get(key)
        if not configs_equal(key, current, wanted):
            out.append(ConfigChange(spec.name, key, current, wanted))
    return out


def _co_partitioning(
    desired: Sequence[DesiredTopic],
    observed: Mapping[str, ObservedTopic],
    increases: Iterable[PartitionIncrease],
) -> list[Refusal]:
    """Every topic of a family must have one partition count, in the catalog and after the plan."""
    raised = {p.topic: p.wanted for p in increases}
    by_family: dict[str, list[DesiredTopic]] = {}
    for spec in desired:
        if spec.family is not None:
            by_family.setdefault(spec.family, []).append(spec)
    out = []
    for family, specs in by_family.items():
        wanted = {s.partitions for s in specs}
        if len(wanted) > 1:
            counts = ", ".join(f"{s.name}={s.partitions}" for s in specs)
            out.append(
                Refusal(
                    family,
                    "co-partitioning",
                    f"the catalog gives family {family} unequal partition counts ({counts})",
                )
            )
            continue
        after = {
            s.name: raised.get(
                s.name, observed[s.name].partitions if s.name in observed else s.partitions
            )
            for s in specs
        }
        if len(set(after.values())) > 1:
            counts = ", ".join(f"{name}={n}" for name, n in after.items())
            out.append(
                Refusal(
                    family,
                    "co-partitioning",
                    f"family {family} would not be co-partitioned on the cluster ({counts}): "
                    "partition p of every topic of a family must live on one worker",
                )
            )
    return out


def diff(
    desired: Sequence[DesiredTopic],
    observed: Mapping[str, ObservedTopic],
    *,
    allow_repartition: bool = False,
) -> Plan:
    """Compare the catalog's topics with the cluster's; never deletes, ignores extra topics."""
    creates: list[DesiredTopic] = []
    increases: list[PartitionIncrease] = []
    configs: list[ConfigChange] = []
    drifts: list[ReplicationDrift] = []
    refusals: list[Refusal] = []
    seen_names: set[str] = set()
    for spec in desired:
        if spec.name in seen_names:
            refusals.append(Refusal(spec.name, "name", "appears twice in the desired topics"))
            continue
        seen_names.add(spec.name)
        refusals.extend(validate_spec(spec))
        current = observed.get(spec.name)
        if current is None:
            creates.append(spec)
            continue
        increase, refusal = _partition_diff(spec, current, allow_repartition)
        if increase:
            increases.append(increase)
        if refusal:
            refusals.append(refusal)
        if current.replication_factor != spec.replication_factor:
            drifts.append(
                ReplicationDrift(spec.name, current.replication_factor, spec.replication_factor)
            )
        configs.extend(_config_diff(spec, current))
    refusals.extend(_co_partitioning(desired, observed, increases))
    return Plan(tuple(creates), tuple(increases), tuple(configs), tuple(drifts), tuple(refusals))
