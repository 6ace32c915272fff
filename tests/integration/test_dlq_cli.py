"""``streams dlq list|show|stats`` against DLQ records produced with real failure headers."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.broker.admin import apply
from streams.catalog import load_catalog
from streams.cli import cli
from streams.core import headers as h
from streams.core.topology import dlq_topic, main_topic
from streams.events import EXAMPLE_PAYLOADS
from streams.publish.publisher import Publisher
from streams.settings import Settings

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
GARBAGE = b"\x00\x01not avro at all\xff" * 3


def _env(settings: Settings) -> dict[str, str]:
    return {
        "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
        "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMS_APP_ID": settings.app_id,
        "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
        "STREAMS_HOME": str(settings.home),
    }


def _failure_headers(
    settings: Settings,
    *,
    reason: str,
    error: h.Failure,
    attempt: int,
    original_offset: int,
    first_failure_ms: int,
    failed_ms: int,
) -> dict[str, str]:
    out = {
        h.ATTEMPT: str(attempt),
        **h.Origin(
            main_topic(settings.topic_prefix, "webhook"), 2, original_offset, first_failure_ms - 50
        ).headers(),
        h.FIRST_FAILURE_AT_MS: str(first_failure_ms),
        h.FAILED_AT_MS: str(failed_ms),
        **error.headers(),
        h.DLQ_REASON: reason,
    }
    return out


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One topic set for the module (the records are only read): unique prefix and app id."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{tag}.",
        app_id=f"test-dlq-cli-{tag}",
        replication_factor_override=1,
        home=tmp_path_factory.mktemp("dlq-cli-home"),
    )


@pytest.fixture(scope="module")
def dlq(settings: Settings) -> dict[str, Any]:
    """The webhook DLQ of a fresh topic set holding four records:

    2:0 permanent HTTP 400 (host 10), 2:1 exhausted HTTP 503, 2:2 permanent HTTP 400
    (host 11: the same fingerprint as 2:0), 0:0 undecodable garbage.
    """
    apply(settings, load_catalog(settings.catalog_path))
    topic = dlq_topic(settings.topic_prefix, "webhook")
    now_ms = int(time.time() * 1000)
    records: list[tuple[int, bytes, bytes, dict[str, str]]] = []
    with Publisher(settings, producer_name="test-dlq") as publisher:
        for n, (reason, failure, attempt) in enumerate(
            [
                ("permanent", h.Failure("streams.errors.Permanent", "HTTP 400 from host 10"), 1),
                ("exhausted", h.Failure("streams.errors.Retryable", "HTTP 503 from host"), 3),
                ("permanent", h.Failure("streams.errors.Permanent", "HTTP 400 from host 11"), 1),
            ]
        ):
            prepared = publisher.prepare(
                "webhook.requested",
                {**EXAMPLE_PAYLOADS["webhook.requested"], "subscription_id": f"sub-{n}"},
                event_id=f"evt-dlq-{n}",
            )
            headers = dict((k, v.decode()) for k, v in prepared.headers)
            headers |= _failure_headers(
                settings,
                reason=reason,
                error=failure,
                attempt=attempt,
                original_offset=40 + n,
                first_failure_ms=now_ms - 60_000 + n * 1000,
                failed_ms=now_ms - 30_000 + n * 1000,
            )
            records.append((2, prepared.key, prepared.value, headers))
    garbage_headers = {
        h.EVENT_ID: "evt-garbage",
        h.ERROR_CLASS: "streams.errors.DecodeError",
        h.ERROR_MESSAGE: "too short for single-object encoding",
        h.DLQ_REASON: "undecodable",
        h.ATTEMPT: "1",
        h.FIRST_FAILURE_AT_MS: str(now_ms - 10_000),
        h.FAILED_AT_MS: str(now_ms - 10_000),
    }
    records.append((0, b"sub-x", GARBAGE, garbage_headers))
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    for partition, key, value, headers in records:
        producer.produce(
            topic, value=value, key=key, partition=partition, headers=list(headers.items())
        )
    assert producer.flush(15) == 0
    return {"topic": topic, "env": _env(settings), "now_ms": now_ms}


@pytest.fixture
def run(dlq: dict[str, Any]) -> Callable[..., Result]:
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(cli, ["dlq", *args], env=env or dlq["env"], catch_exceptions=False)

    return invoke


def test_list_shows_every_record_oldest_first(run: Callable[..., Result], dlq: dict[str, Any]):
    result = run("list", "webhook")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{dlq['topic']}: 4 records in 6 partitions"
    rows = [line for line in lines if re.match(r"^\d+:\d+ ", line)]
    assert [row.split()[0] for row in rows] == ["2:0", "2:1", "2:2", "0:0"]
    assert "exhausted" in rows[1] and "Retryable: HTTP 503 from host" in rows[1]
    assert rows[1].split()[3] == "3"  # the attempt column
    assert "undecodable" in rows[3] and "evt-garbage" in rows[3]
    assert lines[-1] == "details: streams dlq show webhook 0:0"


def test_list_limit_and_reason(run: Callable[..., Result]):
    latest = run("list", "webhook", "--limit", "2")
    assert latest.exit_code == 0, latest.output
    assert "4 records in 6 partitions, showing the latest 2" in latest.output
    assert [line.split()[0] for line in latest.output.splitlines()[2:4]] == ["2:2", "0:0"]

    permanent = run("list", "webhook", "--reason", "permanent")
    assert permanent.exit_code == 0
    assert "2 records with reason permanent (of 4)" in permanent.output
    # positions are the first column ("2:1" also occurs inside timestamps such as 08:52:15)
    rows = [line.split()[0] for line in permanent.output.splitlines() if line[:1].isdigit()]
    assert rows == ["2:0", "2:2"], permanent.output


def test_list_json(run: Callable[..., Result], dlq: dict[str, Any]):
    result = run("list", "webhook", "--json")
    assert result.exit_code == 0
    items = json.loads(result.output)
    assert [i["position"] for i in items] == ["2:0", "2:1", "2:2", "0:0"]
    first = items[0]
    assert first["reason"] == "permanent"
    assert first["error_class"] == "streams.errors.Permanent"
    assert first["attempt"] == 1
    assert first["event_id"] == "evt-dlq-0"
    assert first["event_type"] == "webhook.requested"
    assert first["original_topic"].endswith("webhook") and first["original_offset"] == 40
    assert ISO.match(first["first_failure_at"]) and ISO.match(first["failed_at"])
    assert first["key"] == "sub-0"
    assert items[0]["error_fingerprint"] == items[2]["error_fingerprint"]


def test_show_decodes_headers_and_value(run: Callable[..., Result], dlq: dict[str, Any]):
    result = run("show", "webhook", "2:1")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith(f"{dlq['topic']} 2:1\n")
    assert re.search(r"^  reason\s+exhausted$", out, re.M)
    assert re.search(r"^  error class\s+streams.errors.Retryable$", out, re.M)
    assert re.search(r"^  attempt\s+3$", out, re.M)
    assert re.search(r"^  original\s+\S+webhook 2:41$", out, re.M)
    assert re.search(r"^  first failure\s+\d{4}-\d\d-\d\dT[\d:.]+Z$", out, re.M)
    assert "value (webhook.requested v1," in out
    assert '"subscription_id": "sub-1"' in out
    assert '"event_id": "evt-dlq-1"' in out

    as_json = json.loads(run("show", "webhook", "2:1", "--json").output)
    assert as_json["value"]["decoded"]["subscription_id"] == "sub-1"
    assert as_json["headers"][h.DLQ_REASON] == "exhausted"


def test_show_undecodable_value_as_hex(run: Callable[..., Result]):
    result = run("show", "webhook", "0:0")
    assert result.exit_code == 0, result.output
    assert f"value: UNDECODABLE ({len(GARBAGE)} bytes)" in result.output
    assert "hex: 00 01 6e 6f 74" in result.output
    as_json = json.loads(run("show", "webhook", "0:0", "--json").output)
    assert as_json["value"]["undecodable"]
    assert as_json["value"]["hex_preview"].startswith("00 01")


def test_stats_group_by_reason_and_error(run: Callable[..., Result]):
    result = run("stats", "webhook")
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"^\s+2  permanent$", out, re.M)
    assert re.search(r"^\s+1  exhausted$", out, re.M)
    assert re.search(r"^\s+1  undecodable$", out, re.M)
    assert "by error (3 distinct fingerprints):" in out
    # the two HTTP 400s differ only by a number: one group of 2, shown first
    group_rows = [line for line in out.splitlines() if re.match(r"^\s+\d+  [0-9a-f]{16}  ", line)]
    assert group_rows[0].split()[0] == "2"
    assert "Permanent: HTTP 400 from host" in group_rows[0]

    data = json.loads(run("stats", "webhook", "--json").output)
    assert data["total"] == 4
    assert data["by_reason"] == {"permanent": 2, "exhausted": 1, "undecodable": 1}
    assert data["by_partition"] == {"0": 1, "2": 3}
    assert data["by_error"][0]["count"] == 2
    assert data["by_error"][0]["example"] == "2:0"
    assert ISO.match(data["oldest_failed_at"])


def test_precise_errors(run: Callable[..., Result], dlq: dict[str, Any]):
    def fails(*args: str, env: dict[str, str] | None = None) -> str:
        result = run(*args, env=env)
        assert result.exit_code != 0, result.output
        return result.output

    assert "error: unknown family 'nope'; known: analytics, audit" in fails("list", "nope")
    assert "error: unknown family 'nope'" in fails("show", "nope", "0:0")
    assert "error: unknown family 'nope'" in fails("stats", "nope")
    for bad in ("x", "1", "1:", "-1:0", "1:2:3", "a:b"):
        assert f"error: bad position {bad!r}: expected PARTITION:OFFSET" in fails(
            "show", "webhook", "--", bad
        )
    assert f"error: partition 99 does not exist: {dlq['topic']} has partitions 0-5" in fails(
        "show", "webhook", "99:0"
    )
    assert f"error: no record at 2:50: {dlq['topic']}[2] holds offsets 0-2" in fails(
        "show", "webhook", "2:50"
    )
    assert f"error: no record at 1:0: {dlq['topic']}[1] is empty" in fails("show", "webhook", "1:0")
    assert "Invalid value for '--reason'" in fails("list", "webhook", "--reason", "bogus")
    missing = {**dlq["env"], "STREAMS_TOPIC_PREFIX": "nosuchprefix."}
    assert "error: DLQ topic nosuchprefix.webhook.dlq does not exist" in fails(
        "list", "webhook", env=missing
    )


def test_empty_dlq_and_no_consumer_group(run: Callable[..., Result], settings: Settings):
    empty = run("list", "email")
    assert empty.exit_code == 0
    assert empty.output.strip().endswith(": 0 records in 6 partitions")
    assert run("stats", "email").output.strip().endswith(": 0 records")
    # every read above used assign(): no group was joined, the worker's least of all
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    groups = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    names = {g.group_id for g in groups.valid}
    assert settings.app_id not in names
    assert not [n for n in names if n.startswith("streams-dlq-reader-")]
