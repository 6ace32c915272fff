"""The pure topic diff: every rule, table-driven."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streams.catalog import TopicSpec
from streams.core.topicdiff import (
    MIN_SEGMENT_BYTES,
    REMOVED_CONFIGS_KAFKA4,
    ConfigChange,
    ObservedTopic,
    PartitionIncrease,
    Plan,
    ReplicationDrift,
    configs_equal,
    diff,
    normalise_config,
)

BASE = {"cleanup.policy": "delete", "retention.ms": "604800000", "min.insync.replicas": "1"}


def spec(name: str = "email", partitions: int = 6, rf: int = 1, **configs: str) -> TopicSpec:
    conf = dict(BASE)
    conf.update({k.replace("_", "."): v for k, v in configs.items()})
    return TopicSpec(name, partitions, rf, conf, "main", name.split(".")[0])


def seen(
    name: str = "email", partitions: int = 6, rf: int = 1, configs: dict[str, str] | None = None
) -> ObservedTopic:
    return ObservedTopic(name, partitions, rf, dict(BASE) if configs is None else configs)


def family(partitions: int, prefix: str = "") -> list[TopicSpec]:
    """A family of three topics (main, one retry tier, DLQ) sharing ``partitions``."""
    return [
        TopicSpec(f"{prefix}email", partitions, 1, dict(BASE), "main", "email"),
        TopicSpec(f"{prefix}email.retry.10s", partitions, 1, dict(BASE), "retry", "email"),
        TopicSpec(f"{prefix}email.dlq", partitions, 1, dict(BASE), "dlq", "email"),
    ]


# --- in sync, creates, extras ---------------------------------------------------------------


def test_in_sync_plan_is_empty() -> None:
    plan = diff([spec()], {"email": seen()})
    assert plan == Plan()
    assert plan.in_sync and plan.exit_code == 0 and plan.lines() == []
    assert plan.problems() == []
    assert plan.status_of("email") == "ok"


def test_missing_topic_is_created_with_catalog_settings() -> None:
    plan = diff([spec(partitions=3)], {})
    assert [s.name for s in plan.creates] == ["email"]
    assert plan.changes_pending and plan.exit_code == 2
    assert plan.lines() == [
        "+ create email (3 partitions, rf 1, cleanup.policy=delete, "
        "min.insync.replicas=1, retention.ms=604800000)"
    ]
    assert plan.problems() == ["missing topic email (main topic of family email)"]
    assert plan.status_of("email") == "missing"


def test_unknown_extra_topics_are_ignored_and_nothing_is_deleted() -> None:
    plan = diff([spec()], {"email": seen(), "someone.else": seen("someone.else", 1)})
    assert plan.in_sync
    assert not hasattr(plan, "deletes")


# --- partitions --------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionCase:
    current: int
    wanted: int
    allow: bool
    increases: tuple[PartitionIncrease, ...]
    refusal_kind: str | None
    message_parts: tuple[str, ...] = field(default=())


PARTITION_CASES = {
    "equal": PartitionCase(6, 6, False, (), None),
    "raise refused without flag": PartitionCase(
        3,
        6,
        False,
        (),
        "partitions-increase",
        ("email", "has 3 partitions", "wants 6", "remaps keys", "--allow-repartition"),
    ),
    "raise allowed with flag": PartitionCase(3, 6, True, (PartitionIncrease("email", 3, 6),), None),
    "lower refused": PartitionCase(
        6, 3, False, (), "partitions-decrease", ("email", "has 6 partitions", "wants 3", "cannot")
    ),
    "lower refused even with flag": PartitionCase(
        6, 3, True, (), "partitions-decrease", ("cannot lower",)
    ),
}


@pytest.mark.parametrize("case", PARTITION_CASES.values(), ids=PARTITION_CASES.keys())
def test_partition_rules(case: PartitionCase) -> None:
    plan = diff(
        [spec(partitions=case.wanted)],
        {"email": seen(partitions=case.current)},
        allow_repartition=case.allow,
    )
    assert plan.partition_increases == case.increases
    kinds = [r.kind for r in plan.refusals]
    if case.refusal_kind is None:
        assert kinds == []
        assert plan.exit_code == (2 if case.increases else 0)
        return
    assert kinds == [case.refusal_kind]
    refusal = plan.refusals[0]
    assert (refusal.topic, refusal.current, refusal.wanted) == ("email", case.current, case.wanted)
    assert refusal.is_partition_error
    for part in case.message_parts:
        assert part in plan.lines()[0], plan.lines()
    assert plan.exit_code == 1
    assert plan.problems()[0].startswith(
        f"partition count of email is {case.current} but the catalog says {case.wanted}"
    )


def test_allowed_increase_is_listed_and_reported_as_problem() -> None:
    plan = diff([spec(partitions=6)], {"email": seen(partitions=3)}, allow_repartition=True)
    assert plan.lines() == ["~ partitions email 3 -> 6 (remaps keys)"]
    assert plan.problems() == ["partition count of email is 3 but the catalog says 6"]
    assert plan.status_of("email") == "partitions 3 -> 6"


# --- co-partitioning -----------------------------------------------------------------------


def test_family_with_unequal_counts_on_cluster_is_refused() -> None:
    observed = {
        "email": seen("email", 6),
        "email.retry.10s": seen("email.retry.10s", 3),
        "email.dlq": seen("email.dlq", 6),
    }
    plan = diff(family(6), observed)
    kinds = sorted(r.kind for r in plan.refusals)
    assert kinds == ["co-partitioning", "partitions-increase"]
    copart = next(r for r in plan.refusals if r.kind == "co-partitioning")
    assert "not be co-partitioned" in copart.reason
    assert "email.retry.10s=3" in copart.reason and "email=6" in copart.reason


def test_family_fixed_by_allowed_increase_is_not_a_copartition_refusal() -> None:
    observed = {
        "email": seen("email", 6),
        "email.retry.10s": seen("email.retry.10s", 3),
        "email.dlq": seen("email.dlq", 6),
    }
    plan = diff(family(6), observed, allow_repartition=True)
    assert plan.refusals == ()
    assert plan.partition_increases == (PartitionIncrease("email.retry.10s", 3, 6),)


def test_family_equal_but_different_from_catalog_is_only_a_partition_refusal() -> None:
    observed = {s.name: seen(s.name, 3) for s in family(6)}
    plan = diff(family(6), observed)
    assert {r.kind for r in plan.refusals} == {"partitions-increase"}
    assert len(plan.refusals) == 3


def test_partially_missing_family_is_created_with_the_family_count() -> None:
    observed = {"email": seen("email", 6)}
    plan = diff(family(6), observed)
    assert [s.name for s in plan.creates] == ["email.retry.10s", "email.dlq"]
    assert all(s.partitions == 6 for s in plan.creates)
    assert plan.refusals == ()


def test_catalog_with_unequal_family_counts_is_refused() -> None:
    specs = family(6)
    specs[1] = TopicSpec("email.retry.10s", 4, 1, dict(BASE), "retry", "email")
    plan = diff(specs, {})
    assert [r.kind for r in plan.refusals] == ["co-partitioning"]
    assert "the catalog gives family email unequal partition counts" in plan.refusals[0].reason


def test_leader_topic_is_not_part_of_a_family() -> None:
    leader = TopicSpec("app-__assignor-__leader", 1, 1, {"cleanup.policy": "delete"}, "leader")
    plan = diff([*family(6), leader], {})
    assert plan.refusals == ()
    assert len(plan.creates) == 4


# --- replication ---------------------------------------------------------------------------


def test_replication_difference_is_reported_not_changed() -> None:
    plan = diff(
        [spec(rf=3, min_insync_replicas="2")],
        {"email": seen(rf=1, configs={**BASE, "min.insync.replicas": "2"})},
    )
    assert plan.replication_drifts == (ReplicationDrift("email", 1, 3),)
    assert not plan.changes_pending and not plan.refused
    assert plan.exit_code == 2
    line = plan.lines()[0]
    assert line.startswith("? replication email rf 1, catalog wants 3")
    assert "kafka-reassign-partitions.sh" in line
    assert plan.problems() == ["replication factor of email is 1 but the catalog says 3"]


# --- configs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigCase:
    wanted: dict[str, str]
    current: dict[str, str]
    changes: tuple[tuple[str, str | None, str], ...]  # (key, current, wanted)


CONFIG_CASES = {
    "same": ConfigCase({"retention.ms": "1000"}, {"retention.ms": "1000"}, ()),
    "changed value": ConfigCase(
        {"retention.ms": "604800000"},
        {"retention.ms": "86400000"},
        (("retention.ms", "86400000", "604800000"),),
    ),
    "not overridden yet": ConfigCase(
        {"max.message.bytes": "1064960"}, {}, (("max.message.bytes", None, "1064960"),)
    ),
    "cleanup.policy order is not a change": ConfigCase(
        {"cleanup.policy": "compact,delete"}, {"cleanup.policy": "delete,compact"}, ()
    ),
    "cleanup.policy spaces and case": ConfigCase(
        {"cleanup.policy": "compact,delete"}, {"cleanup.policy": " Delete , compact"}, ()
    ),
    "cleanup.policy really differs": ConfigCase(
        {"cleanup.policy": "compact,delete"},
        {"cleanup.policy": "delete"},
        (("cleanup.policy", "delete", "compact,delete"),),
    ),
    "number with leading zero/space": ConfigCase(
        {"retention.ms": "1000"}, {"retention.ms": " 01000"}, ()
    ),
    "boolean case": ConfigCase(
        {"unclean.leader.election.enable": "false"},
        {"unclean.leader.election.enable": "False"},
        (),
    ),
    "operator's other override is left alone": ConfigCase(
        {"retention.ms": "1000"}, {"retention.ms": "1000", "segment.ms": "3600000"}, ()
    ),
    "several keys, sorted": ConfigCase(
        {"retention.ms": "2", "max.message.bytes": "2048"},
        {"retention.ms": "1", "max.message.bytes": "1024"},
        (("max.message.bytes", "1024", "2048"), ("retention.ms", "1", "2")),
    ),
}


@pytest.mark.parametrize("case", CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_config_rules(case: ConfigCase) -> None:
    desired = TopicSpec("email", 6, 1, dict(case.wanted), "main", "email")
    plan = diff([desired], {"email": seen(configs=dict(case.current))})
    expected = tuple(ConfigChange("email", k, cur, want) for k, cur, want in case.changes)
    assert plan.config_changes == expected
    assert plan.refusals == ()
    assert plan.exit_code == (2 if expected else 0)


def test_config_change_lines_problems_and_grouping() -> None:
    desired = TopicSpec(
        "email", 6, 1, {"retention.ms": "604800000", "max.message.bytes": "2048"}, "main", "email"
    )
    plan = diff([desired], {"email": seen(configs={"retention.ms": "86400000"})})
    assert plan.lines() == [
        "~ config email max.message.bytes (default) -> 2048",
        "~ config email retention.ms 86400000 -> 604800000",
    ]
    assert plan.problems() == [
        "config drift on email: max.message.bytes is (default), the catalog says 2048",
        "config drift on email: retention.ms is 86400000, the catalog says 604800000",
    ]
    assert list(plan.config_changes_by_topic()) == ["email"]
    assert len(plan.config_changes_by_topic()["email"]) == 2
    assert plan.status_of("email") == "config drift: max.message.bytes, retention.ms"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("cleanup.policy", "delete,compact", "compact,delete"),
        ("cleanup.policy", "compact, delete,compact", "compact,delete"),
        ("retention.ms", "007", "7"),
        ("retention.ms", "-1", "-1"),
        ("preallocate", "TRUE", "true"),
        ("compression.type", " zstd ", "zstd"),
        ("retention.ms", None, None),
    ],
)
def test_normalise_config(key: str, value: str | None, expected: str | None) -> None:
    assert normalise_config(key, value) == expected


def test_configs_equal_absent_vs_present() -> None:
    assert not configs_equal("retention.ms", None, "1000")
    assert configs_equal("retention.ms", None, None)


# --- refused configs and names -----------------------------------------------------------


@pytest.mark.parametrize("key", sorted(REMOVED_CONFIGS_KAFKA4))
def test_configs_removed_in_kafka4_are_refused(key: str) -> None:
    desired = TopicSpec("email", 6, 1, {key: "1"}, "main", "email")
    for observed in ({}, {"email": seen(configs={})}):
        plan = diff([desired], observed)
        assert plan.refused, key
        refusal = plan.refusals[0]
        assert refusal.kind == "config" and refusal.topic == "email"
        assert key in refusal.reason and "Kafka 4.0" in refusal.reason
        assert plan.exit_code == 1


@pytest.mark.parametrize(
    ("value", "refused", "fragment"),
    [
        (str(MIN_SEGMENT_BYTES - 1), True, "below Kafka 4's minimum of 1048576"),
        ("1000", True, "segment.bytes=1000"),
        ("lots", True, "not an integer"),
        (str(MIN_SEGMENT_BYTES), False, ""),
        ("1073741824", False, ""),
    ],
)
def test_segment_bytes_minimum(value: str, refused: bool, fragment: str) -> None:
    desired = TopicSpec("email", 6, 1, {"segment.bytes": value}, "main", "email")
    plan = diff([desired], {})
    assert plan.refused is refused
    if refused:
        assert fragment in plan.refusals[0].reason
        assert plan.lines()[-1].startswith("! refuse email: ")
    else:
        assert [s.name for s in plan.creates] == ["email"]


def test_min_insync_above_replication_factor_is_refused() -> None:
    plan = diff([spec(rf=1, min_insync_replicas="2")], {})
    assert plan.refused
    assert "min.insync.replicas=2 exceeds the replication factor 1" in plan.refusals[0].reason


@pytest.mark.parametrize(
    ("name", "legal"),
    [
        ("dev.email.retry.10s", True),
        ("app-email.done-changelog", True),
        ("dev/email", False),
        ("dev email", False),
        ("..", False),
        ("x" * 250, False),
        ("x" * 249, True),
    ],
)
def test_topic_names_must_be_legal(name: str, legal: bool) -> None:
    plan = diff([TopicSpec(name, 1, 1, {}, "main", None)], {})
    assert (not plan.refused) is legal
    if not legal:
        assert "not a legal Kafka topic name" in plan.refusals[0].reason


def test_duplicate_desired_topic_is_refused() -> None:
    plan = diff([spec(), spec()], {})
    assert [r.reason for r in plan.refusals] == ["appears twice in the desired topics"]


# --- exit codes and problem list -----------------------------------------------------------


def test_refusal_wins_over_pending_changes_in_exit_code() -> None:
    desired = [spec("a", 6), spec("b", 3)]
    observed = {"b": seen("b", 6)}
    plan = diff(desired, observed)
    assert plan.changes_pending and plan.refused
    assert plan.exit_code == 1
    assert [line[0] for line in plan.lines()] == ["+", "!"]
