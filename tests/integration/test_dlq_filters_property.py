"""Filters by fingerprint, tenant and time range select exactly the expected records.

A DLQ is generated once (seeded): 240 records over 6 error shapes, 4 tenants and no
tenant, failure times spread over ten days, Avro values carrying the tenant in the
envelope. Hypothesis then draws filters and ``streams dlq export --format jsonl`` must
return exactly what a plain reimplementation over the generated list selects.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streams.broker.admin import apply
from streams.catalog import load_catalog
from streams.cli import cli
from streams.core import headers as h
from streams.core.topology import dlq_topic, main_topic
from streams.events import EXAMPLE_PAYLOADS, build_event
from streams.serde import SchemaStore
from streams.settings import Settings

pytestmark = pytest.mark.kafka

N = 240
TENANTS = [None, "acme", "globex", "initech", "umbrella"]
SHAPES = [
    ("streams.errors.Retryable", "HTTP 503 from host {n}"),
    ("streams.errors.Retryable", "timeout after {n} ms"),
    ("streams.errors.Permanent", "HTTP 400 from host {n}"),
    ("streams.errors.Permanent", "unknown subscription sub-{n}"),
    ("builtins.ValueError", "bad url {n}"),
    ("streams.errors.Rejected", "blocked host"),
]
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Generated:
    position: str
    fingerprint: str
    tenant: str | None
    failed_at_ms: int


@pytest.fixture(scope="module")
def generated(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], list[Generated], int]]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"p{tag}.",
        app_id=f"test-dlq-prop-{tag}",
        replication_factor_override=1,
        home=tmp_path_factory.mktemp("dlq-prop-home"),
    )
    apply(settings, load_catalog(settings.catalog_path))
    store = SchemaStore.load(settings.schemas_dir)
    rng = random.Random(15)
    now_ms = int(time.time() * 1000)
    topic = dlq_topic(settings.topic_prefix, "webhook")
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    offsets: dict[int, int] = {}
    out: list[Generated] = []
    for i in range(N):
        cls, template = rng.choice(SHAPES)
        failure = h.Failure(cls, template.format(n=rng.randint(1, 999)))
        tenant = rng.choice(TENANTS)
        failed_ms = now_ms - rng.randint(0, 10 * DAY_MS)
        event = build_event(
            "webhook.requested",
            EXAMPLE_PAYLOADS["webhook.requested"],
            event_id=f"evt-{i}",
            tenant_id=tenant,
        )
        partition = rng.randrange(6)
        headers = {
            h.EVENT_ID: f"evt-{i}",
            h.EVENT_TYPE: "webhook.requested",
            h.ATTEMPT: "1",
            **h.Origin(
                main_topic(settings.topic_prefix, "webhook"), partition, i, failed_ms
            ).headers(),
            h.FIRST_FAILURE_AT_MS: str(failed_ms),
            h.FAILED_AT_MS: str(failed_ms),
            **failure.headers(),
            h.DLQ_REASON: "exhausted",
        }
        producer.produce(
            topic,
            value=store.encode(event),
            key=f"sub-{i}".encode(),
            partition=partition,
            headers=list(headers.items()),
        )
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        out.append(
            Generated(
                f"{partition}:{offset}", failure.headers()[h.ERROR_FINGERPRINT], tenant, failed_ms
            )
        )
    assert producer.flush(15) == 0
    env = {
        "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
        "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMS_APP_ID": settings.app_id,
        "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
        "STREAMS_HOME": str(settings.home),
    }
    yield env, out, now_ms


def _export(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        cli, ["dlq", "export", "webhook", "--format", "jsonl", "--no-progress", *args], env=env
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@hsettings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_filters_select_exactly_the_expected_records(
    generated: tuple[dict[str, str], list[Generated], int], data: st.DataObject
) -> None:
    env, records, now_ms = generated
    fingerprints = sorted({r.fingerprint for r in records})
    fps = data.draw(st.lists(st.sampled_from(fingerprints), max_size=3, unique=True))
    tenants = data.draw(
        st.lists(st.sampled_from([t for t in TENANTS if t]), max_size=2, unique=True)
    )
    since = data.draw(st.none() | st.integers(now_ms - 11 * DAY_MS, now_ms))
    until = data.draw(st.none() | st.integers(now_ms - 11 * DAY_MS, now_ms + 1))
    if since is not None and until is not None and since >= until:
        since, until = until - 1, since + 1
    args: list[str] = []
    for fp in fps:
        args += ["--fingerprint", fp]
    for t in tenants:
        args += ["--tenant", t]
    if since is not None:
        args += ["--since", str(since)]
    if until is not None:
        args += ["--until", str(until)]

    expected = {
        r.position
        for r in records
        if (not fps or r.fingerprint in fps)
        and (not tenants or r.tenant in tenants)
        and (since is None or r.failed_at_ms >= since)
        and (until is None or r.failed_at_ms < until)
    }
    got = _export(env, *args)
    assert {row["position"] for row in got} == expected
    assert len(got) == len(expected)  # none twice
    for row in got:
        if tenants:
            assert row["tenant_id"] in tenants
