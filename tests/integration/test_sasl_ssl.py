"""SASL_SSL end to end: SCRAM-SHA-512 over TLS on the local broker's second listener.

Every client kind connects through it in one scenario: ``streams topics apply`` (the admin
client), the SDK publisher (confluent-kafka), a worker (aiokafka under faust) running the
webhook job, the worker's topology check, the HTTP API (``POST /v1/events`` publishes an
event the worker then delivers; its readiness checks the broker) and ``streams dlq list``.
Then a wrong password and a CA that did not sign the broker's certificate each fail within
10 s with a message saying which (the CLI commands, a worker, the API, the SDK). The
certificates are made by ``streams.broker.tls`` (``cryptography``) when the broker starts
(conftest's session broker, or ``streams broker start --sasl-ssl``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.api import bearer, running_api, token
from tests.support.engine import WorkerProcess, wait_for, write_catalog
from tests.support.receiver import ThreadedReceiver

from streams.broker import admin as topics_admin
from streams.broker.tls import SaslSslListener, make_local_tls
from streams.catalog import load_catalog
from streams.errors import ConfigError
from streams.publish.publisher import Publisher
from streams.settings import Settings

pytestmark = pytest.mark.kafka

SECRET = "sasl-signing-secret"
FAIL_FAST_S = 10.0
API_AUTH = {  # `streams api` needs an auth configuration before it reaches the broker
    "STREAMS_API_JWT_SECRET": "sasl-tests-secret-" + "s" * 32,
    "STREAMS_API_JWT_ISSUER": "https://issuer.test",
    "STREAMS_API_JWT_AUDIENCE": "streams-api",
    "STREAMS_API_PORT": "0",
}
FAMILY = {
    "partitions": 2,
    "concurrency": 4,
    "handler_timeout": "5s",
    "retry": {"delays": ["1s"], "max_attempts": 2, "jitter": 0.0, "retention": "1d"},
    "rate_limits": [],
}


def webhook(url: str, sub: str) -> tuple[str, dict[str, Any]]:
    payload = {"subscription_id": sub, "url": url, "event_name": "claim.approved", "body": "{}"}
    return ("webhook.requested", payload)


def cli(env: dict[str, str], *args: str) -> tuple[int, str, float]:
    """Run ``streams <args>`` as a process; (exit code, output, seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """GET ``url``, or POST ``body`` as JSON with a producer token; (status, JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **bearer(token(["producer"], "acme"))}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def secure(
    sasl_ssl_listener: SaslSslListener, make_settings: Callable[..., Settings], tmp_path: Path
) -> tuple[Settings, dict[str, str]]:
    """Settings and a process environment that reach the cluster only through SASL_SSL."""
    base = make_settings(catalog_path=write_catalog(tmp_path, {"webhook": FAMILY}))
    listener_env = sasl_ssl_listener.env()
    settings = base.model_copy(
        update={
            "kafka_bootstrap": sasl_ssl_listener.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": sasl_ssl_listener.username,
            "sasl_password": Settings(sasl_password=sasl_ssl_listener.password).sasl_password,
            "ssl_cafile": sasl_ssl_listener.ca_file,
        }
    )
    settings.__dict__.pop("bootstrap", None)
    assert settings.bootstrap == sasl_ssl_listener.bootstrap
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update(listener_env)
    env.update(
        STREAMS_TOPIC_PREFIX=settings.topic_prefix,
        STREAMS_APP_ID=settings.app_id,
        STREAMS_CATALOG_PATH=str(settings.catalog_path),
        STREAMS_HOME=str(settings.home),
        STREAMS_REPLICATION_FACTOR_OVERRIDE="1",
    )
    return settings, env


def test_every_client_connects_through_sasl_ssl(
    secure: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = secure
    code, out, _ = cli(env, "topics", "apply")
    assert code == 0, out
    assert "applied" in out
    catalog = load_catalog(settings.catalog_path)
    assert topics_admin.check_topology(settings, catalog, ["webhook"]) == []
    worker_env = {
        **{k: v for k, v in env.items() if k.startswith("STREAMS_")},
        "STREAMS_WEBHOOK_SIGNING_SECRET": SECRET,
        "STREAMS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    }
    with ThreadedReceiver(SECRET) as receiver:
        worker = WorkerProcess(
            settings,
            ["webhook"],
            tmp_path / "unused.db",
            tmp_path / "worker.log",
            worker_id="sasl-1",
            extra_env=worker_env,
            handlers="streams.jobs.registry",
            builtin_jobs=True,
        )
        publisher = Publisher(settings, catalog=catalog)
        try:
            worker.start()
            worker.wait_ready(90)
            ok = publisher.publish(*webhook(receiver.url + "/hooks/ok", "s1"))
            bad = publisher.publish(*webhook(receiver.url + "/fail/400", "s2"))
            wait_for(
                lambda: [d.status for d in receiver.deliveries_to("/hooks/ok")] == [200],
                60,
                "the worker to deliver over SASL_SSL",
            )
            assert receiver.deliveries_to("/hooks/ok")[0].header("Idempotency-Key") == ok.event_id
            wait_for(lambda: worker.metric("streams_dead_letters_total") >= 1, 60, "a dead letter")
            api_env = {k: v for k, v in env.items() if k.startswith("STREAMS_")}
            with running_api(
                settings, tmp_path / "api", families=("webhook",), extra=api_env
            ) as api:
                status, ready = http(f"{api.url}/health/ready")
                assert status == 200 and ready["checks"]["broker_reachable"] is True, ready
                event = {
                    "event_type": "webhook.requested",
                    "payload": webhook(receiver.url + "/hooks/api", "s3")[1],
                }
                status, answer = http(f"{api.url}/v1/events", event)
                assert status == 202, answer
            wait_for(
                lambda: (
                    [d.header("Idempotency-Key") for d in receiver.deliveries_to("/hooks/api")]
                    == [answer["event_id"]]
                ),
                60,
                "the worker to deliver the API's event",
            )
        finally:
            publisher.close()
            worker.stop()
    code, out, _ = cli(env, "dlq", "list", "webhook", "--json")
    assert code == 0, out
    assert bad.event_id in out


@pytest.mark.parametrize("fault", ["wrong password", "untrusted certificate"])
def test_bad_credentials_fail_fast_saying_which(
    secure: tuple[Settings, dict[str, str]], tmp_path: Path, fault: str
) -> None:
    settings, env = secure
    if fault == "wrong password":
        env["STREAMS_SASL_PASSWORD"] = "not-the-password"
        bad = settings.model_copy(
            update={"sasl_password": Settings(sasl_password="nope").sasl_password}
        )
        expected = "rejected the SASL credentials of user 'streams'"
        env.update(API_AUTH)
    else:
        other_ca = make_local_tls(tmp_path / "other-ca").ca_file
        env["STREAMS_SSL_CAFILE"] = str(other_ca)
        bad = settings.model_copy(update={"ssl_cafile": other_ca})
        expected = f"is not trusted by {other_ca} (STREAMS_SSL_CAFILE)"
        env.update(API_AUTH)
    for args in (("topics", "apply"), ("dlq", "list", "webhook"), ("worker",), ("api",)):
        code, out, took_s = cli(env, *args)
        assert code == 1, (args, out)
        assert expected in out, (args, out)
        assert took_s < FAIL_FAST_S, (args, took_s)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="STREAMS_S"):
        Publisher(bad, catalog=load_catalog(settings.catalog_path))
    assert time.monotonic() - started < FAIL_FAST_S
