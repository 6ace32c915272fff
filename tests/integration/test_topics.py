"""`streams topics plan|apply|list` and the worker's topology check on the real broker.

Every test uses its own topic prefix and app id (fixtures in tests/conftest.py), RF 1, and a
small catalog written to a temp topics.yaml; its topics are deleted afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from streams.broker import admin as topics_admin
from streams.catalog import Catalog, desired_topics, load_catalog
from streams.cli import cli
from streams.core.topicdiff import ObservedTopic
from streams.errors import TopologyError
from streams.settings import Settings

WEEK_MS = str(7 * 86_400_000)
DAY_MS = "86400000"


def catalog_data(
    email_partitions: int = 2, email_delays: tuple[str, ...] = ("10s",), families: int = 2
) -> dict[str, Any]:
    """A small catalog: ``email`` (2 partitions) and ``audit`` (1 partition), one tier each."""
    data: dict[str, Any] = {
        "version": 1,
        "defaults": {
            "replication_factor": 3,
            "min_insync_replicas": 2,
            "retention": "7d",
            "handler_timeout": "30s",
            "retry": {"delays": ["10s"], "retention": "7d"},
        },
        "families": {
            "email": {
                "key_field": "user_id",
                "partitions": email_partitions,
                "retry": {"delays": list(email_delays)},
            },
            "audit": {"key_field": "subject_id", "partitions": 1, "retention": "30d"},
        },
    }
    if families == 1:
        del data["families"]["audit"]
    return data


def write_catalog(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def cluster_cleanup(admin: AdminClient, topic_prefix: str, app_id: str) -> Iterator[None]:
    """Delete this test's topics (its prefix and app id only) when it ends."""
    yield
    mine = [
        name
        for name in admin.list_topics(timeout=10).topics
        if name.startswith(topic_prefix) or name.startswith(f"{app_id}-")
    ]
    if mine:
        for future in admin.delete_topics(mine, operation_timeout=30).values():
            future.result(timeout=30)


@pytest.fixture
def env(settings: Settings, kafka_bootstrap: str, cluster_cleanup: None) -> dict[str, str]:
    """The STREAMS_* environment the CLI reads for this test."""
    return {
        "STREAMS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMS_APP_ID": settings.app_id,
        "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
        "STREAMS_HOME": str(settings.home),
    }


def run_cli(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(cli, ["topics", *args], env=env, catch_exceptions=False)
    return result


def snapshot(admin: AdminClient, settings: Settings, catalog: Catalog) -> dict[str, ObservedTopic]:
    names = [
        s.name
        for s in desired_topics(
            catalog, prefix=settings.topic_prefix, app_id=settings.app_id, rf_override=1
        )
    ]
    return topics_admin.describe_cluster_topics(admin, names)


def own_topics(admin: AdminClient, settings: Settings) -> list[str]:
    return [
        name
        for name in admin.list_topics(timeout=10).topics
        if name.startswith(settings.topic_prefix) or name.startswith(f"{settings.app_id}-")
    ]


# --- tests -------------------------------------------------------------------------------


def test_apply_twice_then_in_sync(
    admin: AdminClient, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    path = write_catalog(tmp_path / "topics.yaml", catalog_data())
    catalog = load_catalog(path)
    p = settings.topic_prefix
    assert own_topics(admin, settings) == []

    first = topics_admin.apply(settings, catalog)
    # 2 x (main, tier, dlq, 2 changelogs) + leader + streams.control + streams.status
    assert len(first.creates) == 13
    assert first.refusals == ()

    observed = snapshot(admin, settings, catalog)
    assert len(observed) == 13
    assert observed[f"{p}streams.control"].configs["cleanup.policy"] == "compact"
    email = observed[f"{p}email"]
    assert (email.partitions, email.replication_factor) == (2, 1)
    assert email.configs["retention.ms"] == WEEK_MS
    assert email.configs["cleanup.policy"] == "delete"
    assert email.configs["min.insync.replicas"] == "1"  # RF override caps min.insync
    assert observed[f"{p}email.retry.10s"].configs["max.message.bytes"] == str(1_048_576 + 16_384)
    assert observed[f"{p}audit"].partitions == 1
    assert observed[f"{p}audit.dlq"].partitions == 1
    changelog = observed[f"{settings.app_id}-email.done-changelog"]
    assert changelog.partitions == 2
    assert changelog.configs["cleanup.policy"] in ("compact,delete", "delete,compact")

    second = topics_admin.apply(settings, catalog)
    assert second.in_sync and not second.changes_pending
    assert snapshot(admin, settings, catalog) == observed
    assert topics_admin.plan(settings, catalog).in_sync
    assert topics_admin.check_topology(settings, catalog, None) == []

    result = run_cli(env, "apply", "--catalog", str(path))
    assert result.exit_code == 0, result.output
    assert "nothing to apply" in result.output

    result = run_cli(env, "plan", "--catalog", str(path))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "in sync: every topic matches the catalog"

    result = run_cli(env, "list", "--catalog", str(path))
    assert result.exit_code == 0, result.output
    rows = result.output.strip().splitlines()[1:]
    assert len(rows) == 13
    assert all(row.rstrip().endswith("ok") for row in rows), result.output


def test_cli_plan_then_apply_on_empty_prefix(
    admin: AdminClient, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    path = write_catalog(tmp_path / "topics.yaml", catalog_data(families=1))
    p = settings.topic_prefix

    result = run_cli(env, "plan", "--catalog", str(path))
    assert result.exit_code == 2, result.output
    assert f"+ create {p}email.retry.10s (2 partitions, rf 1, " in result.output
    assert "pending: 8 to create" in result.output  # + streams.control, streams.status
    assert own_topics(admin, settings) == []  # plan changes nothing

    result = run_cli(env, "list", "--catalog", str(path))
    assert result.exit_code == 0
    assert result.output.count("missing") == 8

    result = run_cli(env, "apply", "--catalog", str(path))
    assert result.exit_code == 0, result.output
    assert "applied 8 change(s)" in result.output
    assert len(own_topics(admin, settings)) == 8
    assert run_cli(env, "plan", "--catalog", str(path)).exit_code == 0


def test_config_drift_detected_and_fixed_incrementally(
    admin: AdminClient, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    path = write_catalog(tmp_path / "topics.yaml", catalog_data(families=1))
    catalog = load_catalog(path)
    topics_admin.apply(settings, catalog)
    main = f"{settings.topic_prefix}email"

    # drift made by someone with the admin client, plus an operator's unrelated override
    resource = ConfigResource(
        ResourceType.TOPIC,
        main,
        incremental_configs=[
            ConfigEntry("retention.ms", DAY_MS, incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=10)
    wait_until(
        lambda: snapshot(admin, settings, catalog)[main].configs.get("retention.ms") == DAY_MS,
        "the drift to show",
    )

    result = run_cli(env, "plan", "--catalog", str(path))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [
        f"~ config {main} retention.ms {DAY_MS} -> {WEEK_MS}",
        "pending: 1 config change(s)",
    ]
    problems = topics_admin.check_topology(settings, catalog, ["email"])
    assert problems == [
        f"config drift on {main}: retention.ms is {DAY_MS}, the catalog says {WEEK_MS}"
    ]

    result = run_cli(env, "apply", "--catalog", str(path))
    assert result.exit_code == 0, result.output
    assert f"~ config {main} retention.ms {DAY_MS} -> {WEEK_MS}" in result.output
    assert "applied 1 change(s)" in result.output

    configs = snapshot(admin, settings, catalog)[main].configs
    assert configs["retention.ms"] == WEEK_MS
    assert configs["segment.ms"] == "3600000"  # left alone: the change was incremental
    assert run_cli(env, "plan", "--catalog", str(path)).exit_code == 0


def test_lowering_partitions_is_refused_and_changes_nothing(
    admin: AdminClient, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    path = write_catalog(tmp_path / "topics.yaml", catalog_data(families=1))
    topics_admin.apply(settings, load_catalog(path))
    p = settings.topic_prefix

    # one refused change (2 -> 1 partitions) among changes that alone would be applied:
    # a new family (creates), a new retry tier and a retention change
    lowered = catalog_data(email_partitions=1, email_delays=("10s", "1m"))
    lowered["families"]["email"]["retention"] = "3d"
    modified = write_catalog(tmp_path / "lowered.yaml", lowered)
    modified_catalog = load_catalog(modified)
    before = snapshot(admin, settings, modified_catalog)
    assert f"{p}audit" not in before and f"{p}email.retry.1m" not in before

    for flags in ((), ("--allow-repartition",)):
        result = run_cli(env, "apply", "--catalog", str(modified), *flags)
        assert result.exit_code == 1, result.output
        assert "no change was made" in result.output
        assert f"{p}email: has 2 partitions, the catalog wants 1" in result.output
        assert "Kafka cannot lower a topic's partition count" in result.output

    with pytest.raises(TopologyError, match="no change was made"):
        topics_admin.apply(settings, modified_catalog, allow_repartition=True)

    assert snapshot(admin, settings, modified_catalog) == before  # nothing created or changed

    result = run_cli(env, "plan", "--catalog", str(modified))
    assert result.exit_code == 1, result.output
    assert f"! refuse {p}email: has 2 partitions, the catalog wants 1" in result.output
    assert f"+ create {p}audit (1 partitions" in result.output
    assert f"~ config {p}email retention.ms {WEEK_MS} -> {3 * 86_400_000}" in result.output


def test_raising_partitions_needs_the_flag(
    admin: AdminClient, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    path = write_catalog(tmp_path / "topics.yaml", catalog_data(families=1))
    topics_admin.apply(settings, load_catalog(path))
    p, app = settings.topic_prefix, settings.app_id
    family = [
        f"{p}email",
        f"{p}email.retry.10s",
        f"{p}email.dlq",
        f"{app}-email.done-changelog",
        f"{app}-email.buckets-changelog",
    ]

    raised = write_catalog(tmp_path / "raised.yaml", catalog_data(email_partitions=3, families=1))
    raised_catalog = load_catalog(raised)
    before = snapshot(admin, settings, raised_catalog)
    assert {before[name].partitions for name in family} == {2}

    problems = topics_admin.check_topology(settings, raised_catalog, ["email"])
    assert f"partition count of {p}email is 2 but the catalog says 3" in problems[0]
    with pytest.raises(TopologyError, match="no change was made") as info:
        topics_admin.require_topology(settings, raised_catalog, ["email"])
    assert f"partition count of {p}email.dlq is 2 but the catalog says 3" in str(info.value)

    result = run_cli(env, "apply", "--catalog", str(raised))
    assert result.exit_code == 1, result.output
    assert "--allow-repartition" in result.output and "no change was made" in result.output
    assert f"{p}email: has 2 partitions, the catalog wants 3" in result.output
    assert snapshot(admin, settings, raised_catalog) == before

    result = run_cli(env, "plan", "--catalog", str(raised), "--allow-repartition")
    assert result.exit_code == 2, result.output
    assert f"~ partitions {p}email 2 -> 3 (remaps keys)" in result.output

    result = run_cli(env, "apply", "--catalog", str(raised), "--allow-repartition")
    assert result.exit_code == 0, result.output
    assert "applied 5 change(s)" in result.output
    after = snapshot(admin, settings, raised_catalog)
    assert {after[name].partitions for name in family} == {3}
    assert after[f"{app}-__assignor-__leader"].partitions == 1
    assert run_cli(env, "plan", "--catalog", str(raised)).exit_code == 0
    assert topics_admin.check_topology(settings, raised_catalog, ["email"]) == []


def test_check_topology_names_a_missing_topic(
    settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    applied = write_catalog(tmp_path / "topics.yaml", catalog_data())
    topics_admin.apply(settings, load_catalog(applied))
    # the catalog gains a retry tier nobody has applied yet
    grown = load_catalog(
        write_catalog(tmp_path / "grown.yaml", catalog_data(email_delays=("10s", "1m")))
    )
    tier = f"{settings.topic_prefix}email.retry.1m"

    assert topics_admin.check_topology(settings, grown, ["email"]) == [
        f"missing topic {tier} (retry topic of family email)"
    ]
    assert topics_admin.check_topology(settings, grown, ["audit"]) == []
    with pytest.raises(TopologyError) as info:
        topics_admin.require_topology(settings, grown, None)
    assert f"missing topic {tier}" in str(info.value)
    assert "streams topics apply" in str(info.value)


def test_broker_rejection_in_validation_pass_changes_nothing(
    admin: AdminClient,
    make_settings: Callable[..., Settings],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    # no RF override on a one-broker cluster: the catalog's RF 3 cannot be placed
    unplaceable = make_settings(replication_factor_override=None)
    catalog = load_catalog(write_catalog(tmp_path / "topics.yaml", catalog_data()))
    with pytest.raises(TopologyError) as info:
        topics_admin.apply(unplaceable, catalog)
    message = str(info.value)
    assert f"cannot create topic {unplaceable.topic_prefix}" in message
    assert "INVALID_REPLICATION_FACTOR" in message
    assert message.endswith("no change was made to the cluster")
    assert own_topics(admin, unplaceable) == []
