"""Pure parts of issue 16: the SASL_SSL listener's config, SCRAM users at format time,
which librdkafka errors are credential/trust failures, the kcat line, the age gauge."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from faust.types import TP
from prometheus_client import CollectorRegistry
from tests.unit.worker_fakes import AckingLog

from streams.broker.clients import security_problem
from streams.broker.config import LocalBrokerError, format_command, render_server_properties
from streams.broker.tls import SaslSslListener, make_local_tls
from streams.cli_broker import kcat_command
from streams.metrics import Metrics
from streams.settings import Settings
from streams.worker.loops import report_lag

CLUSTER_ID = "MkU3OEVBNTcwNTJENDM2Qk"


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_sasl_ssl_listener_properties(tmp_path: Path) -> None:
    pem = tmp_path / "server.pem"
    out = props(
        render_server_properties(
            port=1, controller_port=2, log_dir=tmp_path, sasl_ssl_port=3, server_pem=pem
        )
    )
    assert out["listeners"].endswith(",SASL_SSL://127.0.0.1:3")
    assert out["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1,SASL_SSL://localhost:3"
    assert "SASL_SSL:SASL_SSL" in out["listener.security.protocol.map"]
    assert out["inter.broker.listener.name"] == "PLAINTEXT"
    assert out["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert out["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert out["listener.name.sasl_ssl.ssl.keystore.location"] == str(pem)
    plain = props(render_server_properties(port=1, controller_port=2, log_dir=tmp_path))
    assert "sasl.enabled.mechanisms" not in plain and "SASL_SSL" not in plain["listeners"]


def test_sasl_ssl_listener_needs_its_own_port_and_a_keystore(tmp_path: Path) -> None:
    with pytest.raises(LocalBrokerError, match="own port and a server_pem"):
        render_server_properties(port=1, controller_port=2, log_dir=tmp_path, sasl_ssl_port=1)
    with pytest.raises(LocalBrokerError, match="own port and a server_pem"):
        render_server_properties(port=1, controller_port=2, log_dir=tmp_path, sasl_ssl_port=3)


def test_format_adds_scram_users(tmp_path: Path) -> None:
    argv = format_command(
        "java", tmp_path, tmp_path / "s", CLUSTER_ID, scram_users={"streams": "pw_1"}
    )
    assert argv[-2:] == ["--add-scram", "SCRAM-SHA-512=[name=streams,password=pw_1]"]
    with pytest.raises(LocalBrokerError, match="letters, digits"):
        format_command("java", tmp_path, tmp_path / "s", CLUSTER_ID, scram_users={"a": "x,y]"})


def test_local_tls_files(tmp_path: Path) -> None:
    from cryptography import x509

    tls = make_local_tls(tmp_path)
    pem = tls.server_pem.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # unencrypted PKCS#8 (Kafka PEM)
    assert pem.count("BEGIN CERTIFICATE") == 2
    server = x509.load_pem_x509_certificates(pem.encode())[0]
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert oct(tls.server_pem.stat().st_mode & 0o777) == "0o600"


SECURE = Settings(
    kafka_bootstrap="k:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="svc",
    sasl_password="secret",  # type: ignore[arg-type]
    ssl_cafile=Path("/etc/ca.crt"),
)


def test_security_problems_say_which() -> None:
    auth = security_problem(SECURE, KafkaError._AUTHENTICATION, "SASL authentication error: x")
    assert auth is not None and "rejected the SASL credentials of user 'svc'" in auth
    assert "STREAMS_SASL_PASSWORD" in auth and "secret" not in auth
    tls = security_problem(
        SECURE, KafkaError._SSL, "SSL handshake failed: certificate verify failed"
    )
    assert tls is not None and "not trusted by /etc/ca.crt (STREAMS_SSL_CAFILE)" in tls
    assert security_problem(SECURE, KafkaError._TRANSPORT, "Connection refused") is None


def test_kcat_command_names_the_port_and_hides_the_password() -> None:
    plain = kcat_command("127.0.0.1:40123", Settings(topic_prefix="dev."))
    assert plain.startswith("kcat -b 127.0.0.1:40123 -t dev.email.dlq -C")
    secure = kcat_command("k:9093", SECURE)
    assert "-X security.protocol=SASL_SSL" in secure
    assert "-X sasl.password=$STREAMS_SASL_PASSWORD" in secure and "secret" not in secure


def test_listener_env() -> None:
    env = SaslSslListener("localhost:1", Path("/ca"), "u", "p").env()
    assert env["STREAMS_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["STREAMS_SSL_CAFILE"] == "/ca"


class _Consumer:
    def highwater(self, tp: TP) -> int | None:
        return 10


def _event(offset: int, timestamp_s: float) -> Any:
    return SimpleNamespace(
        topic="email",
        partition=0,
        offset=offset,
        key=b"k",
        value=b"",
        headers=[],
        timestamp=int(timestamp_s * 1000),  # a fetched record's: epoch ms
    )


def test_oldest_unprocessed_age_follows_the_oldest_unfinished_entry() -> None:
    metrics = Metrics.create(CollectorRegistry())
    tp = TP("email", 0)
    log = AckingLog(tp)
    first = log.add(_event(3, 100.0))
    log.add(_event(4, 130.0))

    def age() -> float | None:
        return metrics.registry.get_sample_value(
            "streams_oldest_unprocessed_age_seconds", {"topic": "email", "partition": "0"}
        )

    report_lag(
        {tp: log}, _Consumer(), metrics.consumer_lag, metrics.oldest_unprocessed_age, lambda: 145.0
    )  # type: ignore[arg-type]
    assert age() == 45.0
    first.finish()
    report_lag(
        {tp: log}, _Consumer(), metrics.consumer_lag, metrics.oldest_unprocessed_age, lambda: 145.0
    )  # type: ignore[arg-type]
    assert age() == 15.0
    log.close()
    log2 = AckingLog(tp)
    report_lag(
        {tp: log2}, _Consumer(), metrics.consumer_lag, metrics.oldest_unprocessed_age, lambda: 145.0
    )  # type: ignore[arg-type]
    assert age() == 0.0


def test_topic_counters_are_exported_at_zero() -> None:
    metrics = Metrics.create(CollectorRegistry())
    metrics.prime_topic("email")
    get = metrics.registry.get_sample_value
    assert get("streams_partition_reseeks_total", {"topic": "email", "reason": "stalled"}) == 0
    assert (
        get("streams_records_not_admitted_total", {"topic": "email", "reason": "redelivered"}) == 0
    )
