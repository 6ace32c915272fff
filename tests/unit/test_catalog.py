"""topics.yaml validation (precise file: path: reason messages) and the provisioning plan."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.catalog import Catalog, desired_topics, load_catalog, parse_catalog
from streams.errors import CatalogError

REPO_CATALOG = Path(__file__).resolve().parents[2] / "topics.yaml"
SOURCE = Path("conf/topics.yaml")


def family_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key_field": "user_id",
        "partitions": 2,
        "replication_factor": 3,
        "min_insync_replicas": 2,
        "retention": "1d",
        "handler_timeout": "30s",
        "retry": {"delays": ["10s", "1m"]},
    }
    body.update(overrides)
    return body


def catalog_data(**overrides: Any) -> dict[str, Any]:
    return {"version": 1, "families": {"email": family_body(**overrides)}}


def without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def rate_limit(**overrides: Any) -> dict[str, Any]:
    limit: dict[str, Any] = {"name": "per_user", "scope": "key", "limit": 5, "per": "1m"}
    limit.update(overrides)
    return limit


# (data, path inside the file, reason fragment)
INVALID = {
    "bad duration": (
        catalog_data(retention="7 days"),
        "families.email.retention",
        "expected a duration like '500ms', '30s', '10m', '2h', '7d', got '7 days'",
    ),
    "negative duration": (
        catalog_data(handler_timeout=-1),
        "families.email.handler_timeout",
        "duration must be >= 0, got -1",
    ),
    "boolean is not a duration": (
        catalog_data(retention=True),
        "families.email.retention",
        "expected a duration like '30s', got True",
    ),
    "unknown delivery mode": (
        catalog_data(delivery="exactly_once"),
        "families.email.delivery",
        "Input should be 'at_least_once' or 'at_most_once'",
    ),
    "delivery mode is not a string": (
        catalog_data(delivery=True),
        "families.email.delivery",
        "Input should be 'at_least_once' or 'at_most_once'",
    ),
    "min_insync above replication factor": (
        catalog_data(min_insync_replicas=3, replication_factor=2),
        "families.email",
        "min_insync_replicas (3) exceeds replication_factor (2)",
    ),
    "retry retention shorter than a delay": (
        catalog_data(retry={"delays": ["10s", "2h"], "retention": "1h"}),
        "families.email.retry",
        "retention (3600000 ms) must exceed the longest delay with jitter (7200000 ms",
    ),
    "retry retention within the jitter of the longest delay": (
        catalog_data(retry={"delays": ["1h"], "jitter": 0.5, "retention": "80m"}),
        "families.email.retry",
        "must exceed the longest delay with jitter",
    ),
    "delay under one second": (
        catalog_data(retry={"delays": ["500ms"]}),
        "families.email.retry",
        "every delay must be at least 1s",
    ),
    "empty delays": (
        catalog_data(retry={"delays": []}),
        "families.email.retry.delays",
        "at least 1 item",
    ),
    "unknown key": (
        catalog_data(colour="blue"),
        "families.email.colour",
        "Extra inputs are not permitted",
    ),
    "unknown nested key": (
        catalog_data(retry={"delays": ["10s"], "max_attempt": 3}),
        "families.email.retry.max_attempt",
        "Extra inputs are not permitted",
    ),
    "missing key_field": (
        without(catalog_data(), "families", "email", "key_field"),
        "families.email.key_field",
        "Field required",
    ),
    "bad key_field": (
        catalog_data(key_field="User-Id"),
        "families.email.key_field",
        "String should match pattern",
    ),
    "provider scope without provider": (
        catalog_data(rate_limits=[rate_limit(scope="provider")]),
        "families.email.rate_limits.0",
        "scope 'provider' needs a 'provider' name",
    ),
    "provider on a key scope": (
        catalog_data(rate_limits=[rate_limit(provider="smtp")]),
        "families.email.rate_limits.0",
        "'provider' applies only to scope 'provider'",
    ),
    "zero rate window": (
        catalog_data(rate_limits=[rate_limit(per="0s")]),
        "families.email.rate_limits.0",
        "'per' must be a positive duration",
    ),
    "duplicate rate limit names": (
        catalog_data(rate_limits=[rate_limit(), rate_limit()]),
        "families.email",
        "rate limit names must be unique, got ['per_user', 'per_user']",
    ),
    "max_defer beyond retry retention": (
        catalog_data(rate_limits=[rate_limit(max_defer="30d")]),
        "families.email",
        "rate limit 'per_user': max_defer (2592000000 ms) must be below the retry tiers' "
        "retention (604800000 ms)",
    ),
    "zero partitions": (
        catalog_data(partitions=0),
        "families.email.partitions",
        "greater than or equal to 1",
    ),
    "bad family name": (
        {"families": {"Email": family_body()}},
        "families.Email.name",
        "String should match pattern",
    ),
    "unsupported version": (
        {**catalog_data(), "version": 2},
        "version",
        "Input should be 1",
    ),
    "no families": ({"families": {}}, "<root>", "'families' must be a non-empty mapping"),
    "not a mapping": (["email"], "<root>", "the catalog must be a mapping with 'families'"),
    "family not a mapping": (
        {"families": {"email": 3}},
        "<root>",
        "family 'email' must be a mapping",
    ),
    "repeated lane": (
        catalog_data(priorities={"lanes": ["high", "low", "high"], "default": "low"}),
        "families.email.priorities.lanes",
        "lane names must be unique, repeated: high",
    ),
    "bad lane name": (
        catalog_data(priorities={"lanes": ["High", "low"], "default": "low"}),
        "families.email.priorities.lanes.0",
        "String should match pattern",
    ),
    "one lane": (
        catalog_data(priorities={"lanes": ["only"], "default": "only"}),
        "families.email.priorities.lanes",
        "at least 2 items",
    ),
    "default not a lane": (
        catalog_data(priorities={"lanes": ["high", "low"], "default": "normal"}),
        "families.email.priorities.default",
        "'normal' is not one of the lanes (high, low)",
    ),
    "zero weight": (
        catalog_data(
            priorities={"lanes": ["high", "low"], "default": "low", "weights": {"low": 0}}
        ),
        "families.email.priorities.weights.low",
        "greater than or equal to 1",
    ),
    "weight of an unknown lane": (
        catalog_data(
            priorities={"lanes": ["high", "low"], "default": "low", "weights": {"urgent": 2}}
        ),
        "families.email.priorities.weights",
        "unknown lane(s) urgent; the lanes are high, low",
    ),
    "min share of 1": (
        catalog_data(priorities={"lanes": ["a", "b"], "default": "a", "min_share": {"b": 1}}),
        "families.email.priorities.min_share.b",
        "less than 1",
    ),
    "min shares summing to 1": (
        catalog_data(
            priorities={"lanes": ["a", "b"], "default": "a", "min_share": {"a": 0.5, "b": 0.5}}
        ),
        "families.email.priorities.min_share",
        "the minimum shares must sum below 1, got 1",
    ),
    "unknown priorities field": (
        catalog_data(priorities={"lanes": ["a", "b"], "default": "a", "weight": {"a": 2}}),
        "families.email.priorities.weight",
        "Extra inputs are not permitted",
    ),
    "unknown ordering": (
        catalog_data(ordering="fifo"),
        "families.email.ordering",
        "Input should be 'default' or 'strict'",
    ),
    "on_dead_letter without strict ordering": (
        catalog_data(on_dead_letter="hold"),
        "families.email",
        "on_dead_letter applies only to ordering 'strict'",
    ),
    "unknown on_dead_letter": (
        catalog_data(ordering="strict", on_dead_letter="drop"),
        "families.email.on_dead_letter",
        "Input should be 'release' or 'hold'",
    ),
    "negative max_parked": (
        catalog_data(ordering="strict", max_parked=-1),
        "families.email.max_parked",
        "greater than or equal to 0",
    ),
    "strict ordering with priorities": (
        catalog_data(ordering="strict", priorities={"lanes": ["a", "b"], "default": "a"}),
        "families.email",
        "ordering 'strict' cannot be combined with priorities",
    ),
    "strict ordering with at-most-once delivery": (
        catalog_data(ordering="strict", delivery="at_most_once"),
        "families.email",
        "ordering 'strict' cannot be combined with delivery 'at_most_once'",
    ),
    "strict ordering without idempotency": (
        catalog_data(ordering="strict", idempotency={"enabled": False}),
        "families.email",
        "ordering 'strict' needs idempotency enabled",
    ),
    "defaults not a mapping": (
        {"defaults": [1], **catalog_data()},
        "<root>",
        "'defaults' must be a mapping",
    ),
}


@pytest.mark.parametrize(("data", "where", "reason"), INVALID.values(), ids=INVALID.keys())
def test_invalid_catalog_names_file_path_and_reason(data: Any, where: str, reason: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(data, SOURCE)
    message = str(info.value)
    assert f"{SOURCE}: {where}: " in message, message
    assert reason in message, message


def test_error_inherited_from_defaults_says_so() -> None:
    data = {
        "defaults": {"retention": "a week", "retry": {"delay": ["1s"]}},
        "families": {"email": without(family_body(), "retention")},
    }
    with pytest.raises(CatalogError) as info:
        parse_catalog(data, SOURCE)
    lines = str(info.value).splitlines()
    assert any(
        line.startswith(f"{SOURCE}: families.email.retention (set in defaults.retention): ")
        for line in lines
    ), lines
    assert any(
        line.startswith(f"{SOURCE}: families.email.retry.delay (set in defaults.retry.delay): ")
        for line in lines
    ), lines


def test_family_value_overrides_defaults_deeply() -> None:
    data = {
        "defaults": {"partitions": 6, "retry": {"delays": ["5s"], "max_attempts": 7}},
        "families": {"email": family_body(retry={"delays": ["10s"]}) | {"partitions": 3}},
    }
    fam = parse_catalog(data).family("email")
    assert fam.partitions == 3
    assert fam.retry.delays_ms == (10_000,)
    assert fam.retry.max_attempts == 7  # inherited through the deep merge


def test_delivery_defaults_to_at_least_once() -> None:
    assert parse_catalog(catalog_data()).family("email").delivery == "at_least_once"
    chosen = parse_catalog(catalog_data(delivery="at_most_once")).family("email")
    assert chosen.delivery == "at_most_once"


def test_every_error_is_reported_at_once() -> None:
    data = catalog_data(retention="soon", colour="blue")
    with pytest.raises(CatalogError) as info:
        parse_catalog(data, SOURCE)
    assert len(str(info.value).splitlines()) == 2


def test_unknown_family_lookup_lists_known_ones() -> None:
    catalog = parse_catalog(catalog_data())
    with pytest.raises(CatalogError, match=r"unknown family 'sms'; known: email"):
        catalog.family("sms")


# --- files -----------------------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError, match=rf"^{re.escape(str(path))}: cannot read: "):
        load_catalog(path)


def test_load_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text("families: {email: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=rf"^{re.escape(str(path))}: not valid YAML: "):
        load_catalog(path)


def test_load_reports_the_real_file_name(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(catalog_data(retention="7 days")), encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value).startswith(f"{path}: families.email.retention: ")


def test_repository_catalog_is_valid() -> None:
    catalog = load_catalog(REPO_CATALOG)
    assert {"email", "webhook", "payment", "audit", "cleanup"} <= set(catalog.families)
    assert catalog.family("audit").partitions == 3


# --- provisioning plan -------------------------------------------------------------------


@pytest.fixture
def repo_catalog() -> Catalog:
    return load_catalog(REPO_CATALOG)


def test_control_plane_topics() -> None:
    data = catalog_data() | {"control_plane": {"status_partitions": 6, "status_ttl": "2h"}}
    specs = desired_topics(parse_catalog(data), prefix="", app_id="app", rf_override=None)
    by_role = {s.role: s for s in specs}
    control, status = by_role["control"], by_role["status"]
    assert (control.name, control.partitions, control.configs["cleanup.policy"]) == (
        "streams.control",
        1,
        "compact",
    )
    assert (status.name, status.partitions) == ("streams.status", 6)
    assert status.configs["cleanup.policy"] == "compact,delete"
    assert status.configs["retention.ms"] == str(2 * 3600 * 1000)


def test_control_plane_section_is_validated() -> None:
    data = catalog_data() | {"control_plane": {"status_partitions": 0}}
    with pytest.raises(CatalogError, match=r"control_plane\.status_partitions"):
        parse_catalog(data)


def test_desired_topics_of_one_family() -> None:
    catalog = parse_catalog(catalog_data(rate_limits=[rate_limit(per="2d", max_defer="1d")]))
    specs = desired_topics(catalog, prefix="dev.", app_id="app", rf_override=None)
    assert [(s.name, s.role, s.family) for s in specs] == [
        ("dev.email", "main", "email"),
        ("dev.email.retry.10s", "retry", "email"),
        ("dev.email.retry.1m", "retry", "email"),
        ("dev.email.dlq", "dlq", "email"),
        ("app-email.done-changelog", "changelog", "email"),
        ("app-email.buckets-changelog", "changelog", "email"),
        ("app-__assignor-__leader", "leader", None),
        ("dev.streams.control", "control", None),
        ("dev.streams.status", "status", None),
        ("dev.streams.workers", "workers", None),
        ("dev.streams.skipped", "skipped", None),
        ("dev.streams.schedules", "schedules", None),
    ]
    by_name = {s.name: s for s in specs}
    main, tier, dlq = by_name["dev.email"], by_name["dev.email.retry.10s"], by_name["dev.email.dlq"]
    assert (main.partitions, main.replication_factor) == (2, 3)
    assert main.configs == {
        "min.insync.replicas": "2",
        "cleanup.policy": "delete",
        "retention.ms": "86400000",
        "max.message.bytes": "1048576",
    }
    assert tier.configs["max.message.bytes"] == str(1_048_576 + 16_384)  # header reserve
    assert tier.configs["retention.ms"] == "604800000"
    assert dlq.configs["retention.ms"] == str(30 * 86_400_000)
    done = by_name["app-email.done-changelog"]
    assert done.configs["cleanup.policy"] == "compact,delete"
    assert done.configs["retention.ms"] == str(7 * 86_400_000)  # idempotency ttl
    buckets = by_name["app-email.buckets-changelog"]
    assert buckets.configs["retention.ms"] == str(2 * 86_400_000)  # longest rate window
    leader = by_name["app-__assignor-__leader"]
    assert (leader.partitions, leader.replication_factor) == (1, 3)


def test_strict_ordering_adds_a_parking_topic_and_a_holds_changelog() -> None:
    catalog = parse_catalog(catalog_data(ordering="strict", on_dead_letter="hold", max_parked=5))
    fam = catalog.family("email")
    assert fam.strict and (fam.on_dead_letter, fam.max_parked) == ("hold", 5)
    topics = fam.topics("dev.")
    assert topics.parked == "dev.email.parked"
    assert "dev.email.parked" not in topics.all  # no consumer group reads it
    by_name = {
        s.name: s for s in desired_topics(catalog, prefix="dev.", app_id="app", rf_override=None)
    }
    parked = by_name["dev.email.parked"]
    assert (parked.role, parked.partitions, parked.family) == ("parked", 2, "email")
    assert parked.configs == by_name["dev.email.retry.10s"].configs  # kept like the retries
    holds = by_name["app-email.holds-changelog"]
    assert holds.configs["cleanup.policy"] == "compact" and holds.partitions == 2
    plain = parse_catalog(catalog_data())
    names = {s.name for s in desired_topics(plain, prefix="dev.", app_id="app", rf_override=None)}
    assert plain.family("email").topics("dev.").parked is None
    assert "dev.email.parked" not in names and "app-email.holds-changelog" not in names


def test_priority_lanes_are_topics_like_the_main_one() -> None:
    prio = {"lanes": ["high", "normal", "low"], "default": "normal", "min_share": {"low": 0.05}}
    catalog = parse_catalog(catalog_data(priorities=prio))
    fam = catalog.family("email")
    specs = desired_topics(catalog, prefix="dev.", app_id="app", rf_override=None)
    assert [(s.name, s.role) for s in specs[:6]] == [
        ("dev.email", "main"),
        ("dev.email.lane.high", "lane"),
        ("dev.email.lane.low", "lane"),
        ("dev.email.retry.10s", "retry"),
        ("dev.email.retry.1m", "retry"),
        ("dev.email.dlq", "dlq"),
    ]
    by_name = {s.name: s for s in specs}
    for lane in ("dev.email.lane.high", "dev.email.lane.low"):
        assert by_name[lane].configs == by_name["dev.email"].configs
        assert (by_name[lane].partitions, by_name[lane].family) == (2, "email")
    assert fam.priorities is not None and fam.priorities.weight("high") == 1  # not listed
    topics = fam.topics("dev.")
    assert topics.topic_for_lane("high") == "dev.email.lane.high"
    assert topics.topic_for_lane("normal") == topics.topic_for_lane(None) == "dev.email"
    assert fam.lane_of("low") == "low"
    with pytest.raises(
        ValueError, match=r"unknown priority 'urgent' .*lanes are high, normal, low"
    ):
        fam.lane_of("urgent")
    plain = parse_catalog(catalog_data()).family("email")
    with pytest.raises(ValueError, match="family 'email' has no priority lanes"):
        plain.lane_of("high")


def test_repository_catalog_gives_email_lanes(repo_catalog: Catalog) -> None:
    prio = repo_catalog.family("email").priorities
    assert prio is not None and (prio.lanes, prio.default) == (("high", "normal", "low"), "normal")
    assert [f for f, fam in repo_catalog.families.items() if fam.priorities] == ["email"]


@pytest.mark.parametrize(
    ("override", "rf", "min_isr"), [(None, 3, "2"), (1, 1, "1"), (2, 2, "2"), (5, 3, "2")]
)
def test_replication_override_caps_rf_and_min_insync(
    override: int | None, rf: int, min_isr: str
) -> None:
    catalog = parse_catalog(catalog_data())
    specs = desired_topics(catalog, prefix="", app_id="app", rf_override=override)
    assert {s.replication_factor for s in specs} == {rf}
    assert {s.configs.get("min.insync.replicas") for s in specs if s.role != "leader"} == {min_isr}


def test_every_family_is_co_partitioned_by_construction(repo_catalog: Catalog) -> None:
    specs = desired_topics(repo_catalog, prefix="x.", app_id="a", rf_override=1)
    for name, fam in repo_catalog.families.items():
        counts = {s.partitions for s in specs if s.family == name}
        assert counts == {fam.partitions}, name
        lanes = len(fam.priorities.other_lanes) if fam.priorities else 0
        expected = len(fam.retry.tier_delays_ms) + 4 + (1 if fam.state_table else 0) + lanes
        assert sum(1 for s in specs if s.family == name) == expected


def test_desired_topic_names_are_unique(repo_catalog: Catalog) -> None:
    names = [s.name for s in desired_topics(repo_catalog, prefix="", app_id="a", rf_override=1)]
    assert len(names) == len(set(names))


def test_desired_topics_do_not_set_configs_removed_in_kafka4(repo_catalog: Catalog) -> None:
    removed = {"message.format.version", "message.timestamp.difference.max.ms"}
    for spec in desired_topics(repo_catalog, prefix="", app_id="a", rf_override=None):
        assert not removed & set(spec.configs), spec.name


def test_state_tables_are_compacted_changelogs_and_consent_matches_push(
    repo_catalog: Catalog,
) -> None:
    specs = desired_topics(repo_catalog, prefix="x.", app_id="a", rf_override=1)
    state = {s.name: s for s in specs if s.name.endswith(".state-changelog")}
    assert set(state) == {"a-email.state-changelog", "a-consent.state-changelog"}
    assert all(s.configs["cleanup.policy"] == "compact" for s in state.values())
    # consent is read by the push job locally: partition p of both on one worker
    assert repo_catalog.family("consent").partitions == repo_catalog.family("push").partitions
    assert repo_catalog.family("consent").key_field == repo_catalog.family("push").key_field
