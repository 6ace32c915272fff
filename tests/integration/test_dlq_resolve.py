"""``streams dlq delete|purge``: resolved marks that list, stats, export and redrive honour."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Producer
from tests.support.engine import provision, write_catalog

from streams.cli import cli
from streams.core import headers as h
from streams.core.topology import dlq_topic
from streams.dlq.reader import DlqReader
from streams.publish.publisher import Publisher
from streams.settings import Settings

pytestmark = pytest.mark.kafka
DAY_MS = 86_400_000


def test_delete_and_purge_mark_only_what_was_selected(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path, {"webhook": {"partitions": 1}, "audit": {"partitions": 1}})
    settings = make_settings(catalog_path=catalog)
    provision(settings)
    topic = dlq_topic(settings.topic_prefix, "webhook")
    now_ms = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    with Publisher(settings) as publisher:
        for i in range(6):
            prepared = publisher.prepare(
                "webhook.requested",
                {
                    "subscription_id": f"s{i}",
                    "url": "https://example.com/h",
                    "event_name": "x",
                    "body": "{}",
                },
                event_id=f"evt-{i}",
            )
            age_ms = (10 if i < 3 else 1) * DAY_MS  # 0-2 ten days old, 3-5 one day old
            headers = {k: v.decode() for k, v in prepared.headers} | {
                h.FAILED_AT_MS: str(now_ms - age_ms),
                h.DLQ_REASON: "permanent" if i % 2 else "exhausted",
                h.ERROR_CLASS: "streams.errors.Permanent",
                h.ERROR_MESSAGE: f"HTTP 400 #{i}",
            }
            producer.produce(
                topic,
                value=prepared.value,
                key=prepared.key,
                partition=0,
                headers=list(headers.items()),
            )
    assert producer.flush(15) == 0
    env = {
        "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
        "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMS_APP_ID": settings.app_id,
        "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
        "STREAMS_HOME": str(settings.home),
        "STREAMS_CATALOG_PATH": str(settings.catalog_path),
    }

    def run(*args: str) -> Result:
        result = CliRunner().invoke(cli, ["dlq", *args], env=env, catch_exceptions=False)
        return result

    def positions(*args: str) -> list[str]:
        out = run("export", "webhook", "--format", "jsonl", *args)
        assert out.exit_code == 0, out.output
        return [json.loads(line)["position"] for line in out.stdout.splitlines()]

    assert run("delete", "webhook", "0:9").exit_code == 1  # no such record: nothing marked
    deleted = run("delete", "webhook", "0:1", "--note", "refunded by hand")
    assert deleted.exit_code == 0 and "marked 1 record" in deleted.output
    assert positions() == ["0:0", "0:2", "0:3", "0:4", "0:5"]
    assert "0:1" in positions("--include-resolved")

    dry = run("purge", "webhook", "--older-than", "5d", "--reason", "exhausted", "--dry-run")
    assert dry.exit_code == 0 and "would mark 2 records" in dry.output, dry.output
    assert len(positions()) == 5
    purged = run("purge", "webhook", "--older-than", "5d", "--reason", "exhausted")
    assert "marked 2 records" in purged.output  # 0:0 and 0:2; not 0:1 (already), not 3-5
    assert positions() == ["0:3", "0:4", "0:5"]

    stats = json.loads(run("stats", "webhook", "--json").stdout)
    assert stats["total"] == 3 and stats["hidden_resolved"] == 3
    plan = json.loads(run("redrive", "webhook", "--dry-run", "--json").stdout)
    assert plan["sent"] == 3 and plan["skipped"] == {"resolved": 3}
    shown = json.loads(run("show", "webhook", "0:1", "--json").stdout)
    assert shown["state"] == "resolved"
    with DlqReader(settings, topic) as reader:
        assert sum(r.count for r in reader.partitions()) == 6  # nothing removed physically
    with DlqReader(settings, settings.topic_prefix + "audit") as reader:
        actions = sorted(r.event_type or "" for r in reader.scan())
    assert len(actions) == 3  # delete, purge, the dry-run redrive (not the purge dry run)
