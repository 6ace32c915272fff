"""Topic naming: one place derives every name; helpers are pure and safe to apply twice."""

from __future__ import annotations

import pytest

from streams.core import topology

S, M, H = 1000, 60_000, 3_600_000


@pytest.mark.parametrize(
    ("prefix", "family", "main", "retry_30s", "dlq"),
    [
        ("", "email", "email", "email.retry.30s", "email.dlq"),
        ("dev.", "email", "dev.email", "dev.email.retry.30s", "dev.email.dlq"),
        (
            "acme-prod-",
            "webhook",
            "acme-prod-webhook",
            "acme-prod-webhook.retry.30s",
            "acme-prod-webhook.dlq",
        ),
    ],
)
def test_names(prefix: str, family: str, main: str, retry_30s: str, dlq: str) -> None:
    assert topology.main_topic(prefix, family) == main
    assert topology.retry_topic(prefix, family, 30 * S) == retry_30s
    assert topology.dlq_topic(prefix, family) == dlq


@pytest.mark.parametrize(
    ("delay_ms", "label"),
    [
        (1 * S, "1s"),
        (10 * S, "10s"),
        (90 * S, "90s"),
        (5 * M, "5m"),
        (2 * H, "2h"),
        (24 * H, "1d"),
        (1500, "1500ms"),
    ],
)
def test_retry_tier_labels(delay_ms: int, label: str) -> None:
    assert topology.retry_topic("", "email", delay_ms) == f"email.retry.{label}"


@pytest.mark.parametrize("prefix", ["", "dev.", "staging-", "t-1234."])
@pytest.mark.parametrize("name", ["email", "email.retry.10s", "email.dlq"])
def test_prefix_is_idempotent(prefix: str, name: str) -> None:
    once = topology.with_prefix(prefix, name)
    assert once == prefix + name
    assert topology.with_prefix(prefix, once) == once


def test_helpers_accept_an_already_prefixed_family() -> None:
    assert topology.main_topic("dev.", "dev.email") == "dev.email"
    assert topology.dlq_topic("dev.", "email") == topology.dlq_topic("dev.", "dev.email")


def test_prefix_without_separator_is_refused() -> None:
    # 'pay' + 'payment' would be ambiguous with an idempotent with_prefix: a prefix must end
    # in '.' or '-', which family names cannot contain
    with pytest.raises(ValueError, match="must end with"):
        topology.main_topic("pay", "payment")
    assert topology.main_topic("pay.", "payment") == "pay.payment"
    assert topology.main_topic("pay-", "pay-payment") == "pay-payment"


def test_settings_refuse_a_prefix_without_separator() -> None:
    from pydantic import ValidationError

    from streams.settings import Settings

    with pytest.raises(ValidationError, match="topic_prefix"):
        Settings(topic_prefix="pay")
    assert Settings(topic_prefix="prod.").topic_prefix == "prod."


def test_family_topics_one_tier_per_distinct_delay_ascending() -> None:
    names = topology.family_topics("dev.", "email", [5 * M, 10 * S, 5 * M, 1 * M])
    assert names.main == "dev.email"
    assert names.retries == ("dev.email.retry.10s", "dev.email.retry.1m", "dev.email.retry.5m")
    assert names.dlq == "dev.email.dlq"
    assert names.all == ("dev.email", *names.retries, "dev.email.dlq")
    assert names.family == "email"


def test_family_topics_are_pure() -> None:
    first = topology.family_topics("p.", "audit", [1 * S, 10 * S])
    assert topology.family_topics("p.", "audit", [10 * S, 1 * S]) == first


def test_table_and_changelog_names() -> None:
    assert topology.table_name("email", "done") == "email.done"
    assert topology.table_name("email", "buckets") == "email.buckets"
    assert (
        topology.changelog_topic("streams-dev", "email.done") == "streams-dev-email.done-changelog"
    )
    assert topology.leader_topic("streams-dev") == "streams-dev-__assignor-__leader"


def test_unknown_table_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown table kind 'seen'; expected one of"):
        topology.table_name("email", "seen")


@pytest.mark.parametrize(
    ("event_type", "family"),
    [("email.requested", "email"), ("payment.captured", "payment"), ("claim.audit.v2", "claim")],
)
def test_family_of_event_type(event_type: str, family: str) -> None:
    assert topology.family_of_event_type(event_type) == family


@pytest.mark.parametrize("event_type", ["email", "email.", ".requested", "", "."])
def test_family_of_event_type_errors(event_type: str) -> None:
    with pytest.raises(ValueError, match=r"must look like '<family>.<name>'") as info:
        topology.family_of_event_type(event_type)
    assert repr(event_type) in str(info.value)


def test_lane_topics() -> None:
    assert topology.lane_topic("", "email", "high") == "email.lane.high"
    assert topology.lane_topic("dev.", "email", "high") == "dev.email.lane.high"
    assert topology.lane_of_topic("dev.", "email", "dev.email.lane.high") == "high"
    for other in ("dev.email", "dev.email.retry.10s", "dev.email.lane.", "email.lane.high"):
        assert topology.lane_of_topic("dev.", "email", other) is None
    names = topology.family_topics("dev.", "email", [10_000], ["high", "low"])
    assert names.lanes == (("high", "dev.email.lane.high"), ("low", "dev.email.lane.low"))
    assert names.lane_topics == ("dev.email.lane.high", "dev.email.lane.low")
    assert names.all == ("dev.email", "dev.email.retry.10s", "dev.email.dlq")  # no lanes yet
    assert names.topic_for_lane("low") == "dev.email.lane.low"
    assert names.topic_for_lane("gone") == names.topic_for_lane(None) == "dev.email"


def test_the_lane_of_a_consumed_record() -> None:
    names = topology.family_topics("", "email", [10_000], ["high", "low"])
    assert names.lane_of_record("email.lane.high", None, "normal") == "high"
    assert names.lane_of_record("email", "high", "normal") == "normal"  # the topic decides
    assert names.lane_of_record("email.retry.10s", "low", "normal") == "low"
    for header in (None, "", "normal", "gone"):
        assert names.lane_of_record("email.retry.10s", header, "normal") == "normal"
