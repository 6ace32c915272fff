"""Every Grafana panel's query has data in a real Prometheus scraping a live worker.

A worker runs the webhook job against the real receiver under a small load that succeeds,
retries (503 then 200), dead-letters (400: permanent; 503 for ever: exhausted), defers (a
per-subscription rate limit) and skips a duplicate. Prometheus (Debian's package) scrapes
the worker every second with the labels the chart's ServiceMonitor gives it (namespace,
pod); then each target of each panel of helm/streams/files/dashboards/streams.json is
evaluated through the HTTP API, with the dashboard variables set to this run's values, and
must return at least one series with a number in it.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.engine import WorkerProcess, provision, wait_for, write_catalog
from tests.support.prometheus import PrometheusServer
from tests.support.receiver import ThreadedReceiver

from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.testing.processes import ManagedProcess, free_port

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "helm" / "streams" / "files" / "dashboards" / "streams.json"
SECRET = "dashboard-signing-secret"
NAMESPACE, POD = "streams-test", "worker-0"
DONE_Q = 'streams_events_total{outcome="done"}'

# Metrics this branch does not export yet, each with who adds it. Panels over them are
# skipped here, and only those; the test fails once they are served, so the list stays
# closed. (Empty since the merge of `ingest`, which added the API's metrics.)
NOT_YET_EXPORTED: dict[str, str] = {}

FAMILY = {
    "partitions": 2,
    "concurrency": 8,
    "handler_timeout": "5s",
    "retry": {"delays": ["1s"], "max_attempts": 2, "jitter": 0.0, "retention": "1d"},
    "rate_limits": [
        {
            "name": "per_subscription",
            "scope": "key",
            "limit": 2,
            "per": "1h",
            "on_exceed": "defer",
            "max_defer": "1h",
        }
    ],
    "circuit_breaker": {"failure_threshold": 50, "cooldown": "3s"},
}


def webhook(url: str, sub: str) -> tuple[str, dict[str, Any]]:
    payload = {"subscription_id": sub, "url": url, "event_name": "claim.approved", "body": "{}"}
    return ("webhook.requested", payload)


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def substitute(expr: str) -> str:
    """The dashboard variables as Grafana would fill them for this run."""
    for name, value in {
        "$namespace": NAMESPACE,
        "$family": "webhook",
        "$worker": POD,
        "$__rate_interval": "15s",
        "$__range": "10m",
    }.items():
        expr = expr.replace(name, value)
    return expr


def scraped(prometheus: PrometheusServer, expr: str) -> float:
    """The sum of ``expr`` over its series as Prometheus has it now (0 when none)."""
    return sum(float(s["value"][1]) for s in prometheus.query(expr))


def fewest_samples(prometheus: PrometheusServer) -> float:
    """The fewest samples any streams_* series of this run has in the last minute."""
    names = [n for n in prometheus.api("label/__name__/values") if n.startswith("streams_")]
    counts = [
        scraped(prometheus, f'min(count_over_time({name}{{namespace="{NAMESPACE}"}}[1m]))')
        for name in names
    ]
    return min(counts, default=0)


def has_number(series: list[dict[str, Any]]) -> bool:
    return any(value != "NaN" for s in series for _, value in s["values"])


def start_api(settings: Settings, tmp: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update(
        STREAMS_HOME=str(tmp / "api-home"),
        STREAMS_KAFKA_BOOTSTRAP=settings.bootstrap,
        STREAMS_TOPIC_PREFIX=settings.topic_prefix,
        STREAMS_API_PORT=str(port),
        STREAMS_API_JWT_SECRET="dashboard-test-secret-of-at-least-32-bytes",
        STREAMS_API_JWT_ISSUER="streams-test",
        STREAMS_API_JWT_AUDIENCE="streams",
    )
    api = ManagedProcess([sys.executable, "-m", "streams", "api"], env, tmp / "api.log")
    api.start()
    api.wait_ready(f"http://127.0.0.1:{port}/health/ready", timeout_s=60, interval_s=0.2)
    return api, port


def api_requests(url: str) -> None:
    """A few API answers: 200s and a 401 (the errors panel counts 4xx and 5xx)."""
    for path in ("/health/live", "/health/ready", "/v1/audit?tenant=*"):
        get(url + path)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_dashboard_variables_and_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"namespace", "family", "worker"} <= set(variables)
    assert dashboard["schemaVersion"] >= 39
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]


def test_every_panel_has_data_in_a_real_prometheus(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(catalog_path=write_catalog(tmp_path, {"webhook": FAMILY}))
    catalog = provision(settings)
    env = {"STREAMS_WEBHOOK_SIGNING_SECRET": SECRET, "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}
    with ThreadedReceiver(SECRET) as receiver:
        worker = WorkerProcess(
            settings,
            ["webhook"],
            tmp_path / "unused.db",
            tmp_path / "worker.log",
            worker_id=POD,
            extra_env=env,
            handlers="streams.jobs.registry",
            builtin_jobs=True,
        )
        publisher = Publisher(settings, catalog=catalog)
        prometheus: PrometheusServer | None = None
        api: ManagedProcess | None = None
        try:
            worker.start()
            api, api_port = start_api(settings, tmp_path)
            worker.wait_ready(90)
            prometheus = PrometheusServer(
                tmp_path / "prom",
                [
                    (f"127.0.0.1:{worker.port}", {"namespace": NAMESPACE, "pod": POD}),
                    (f"127.0.0.1:{api_port}", {"namespace": NAMESPACE, "pod": "api-0"}),
                ],
            )
            prometheus.start()
            started_s = prometheus.now_s()
            wait_for(lambda: scraped(prometheus, "count(up)") >= 2, 30, "the first scrapes")
            api_url = f"http://127.0.0.1:{api_port}"
            api_requests(api_url)
            # two waves with a scrape between them: histograms and counters then move between
            # samples, so rates and quantiles are numbers (a series first seen at its final
            # value has a rate of 0 and quantiles of NaN)
            publisher.publish_batch(
                [webhook(receiver.url + "/hooks/ok", f"early-{n}") for n in range(4)]
            )
            wait_for(lambda: scraped(prometheus, DONE_Q) >= 4, 30, "a scrape of the first wave")
            load = [webhook(receiver.url + "/hooks/ok", f"ok-{n}") for n in range(8)]
            load += [webhook(receiver.url + "/fail/503-then-200", f"flaky-{n}") for n in range(3)]
            load += [webhook(receiver.url + "/fail/400", f"bad-{n}") for n in range(2)]
            load += [webhook(receiver.url + "/fail/503", "down")]
            load += [webhook(receiver.url + "/hooks/busy", "busy") for _ in range(4)]
            publisher.publish_batch(load)
            api_requests(api_url)
            twice = publisher.publish(*webhook(receiver.url + "/hooks/twice", "twice-1"))
            # progress, not time: the flaky ones delivered, three dead letters, the rate
            # limit deferred the busy subscription's third event
            wait_for(
                lambda: (
                    len([d for d in receiver.deliveries if d.status == 200]) >= 4 + 8 + 3 + 2 + 1
                ),
                60,
                "the successful deliveries",
            )
            wait_for(
                lambda: worker.metric("streams_dead_letters_total") >= 3, 60, "three dead letters"
            )
            wait_for(lambda: worker.metric("streams_deferrals_total") >= 1, 30, "a deferral")
            publisher.publish(
                *webhook(receiver.url + "/hooks/twice", "twice-1"), event_id=twice.event_id
            )
            wait_for(
                lambda: worker.metric("streams_duplicates_skipped_total") >= 1, 30, "a duplicate"
            )
            # Prometheus has scraped the final counts
            done = worker.metric("streams_events_total", outcome="done")
            wait_for(lambda: scraped(prometheus, DONE_Q) >= done, 30, "a scrape of the load")
            # the lag loop reports every few seconds; then every series has a few samples
            for gauge in ("streams_consumer_lag", "streams_oldest_unprocessed_age_seconds"):
                wait_for(lambda g=gauge: f"{g}{{" in worker.metrics(), 30, f"{gauge} reported")
            wait_for(lambda: fewest_samples(prometheus) >= 3, 30, "three samples of every series")
            assert scraped(prometheus, 'up{pod="api-0"}') == 1, "the API's /metrics is scraped"
            exported = worker.metrics() + get(api_url + "/metrics")[1]
            for metric in NOT_YET_EXPORTED:
                assert metric not in exported, f"{metric} is exported now: drop its exemption"
            empty = []
            checked = skipped = 0
            for title, expr in panel_queries():
                if any(metric in expr for metric in NOT_YET_EXPORTED):
                    skipped += 1
                    continue
                series = prometheus.query_range(substitute(expr), started_s, prometheus.now_s())
                checked += 1
                if not has_number(series):
                    empty.append(f"{title}: {substitute(expr)}")
            assert checked == len(panel_queries()) - skipped
            assert not empty, "panels without data:\n" + "\n".join(empty)
        finally:
            publisher.close()
            if prometheus is not None:
                prometheus.stop()
            if api is not None:
                api.stop(15.0)
            worker.stop()
