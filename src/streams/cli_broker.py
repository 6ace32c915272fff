"""``streams broker start|stop|status``: the local single-node Kafka broker."""

from __future__ import annotations

import sys

import click

from streams.broker.local import DEFAULT_START_TIMEOUT_S, DEFAULT_STOP_TIMEOUT_S, LocalBroker
from streams.broker.tls import SaslSslListener
from streams.settings import Settings

_PORT = click.IntRange(1, 65535)


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def broker() -> None:
    """A local Apache Kafka broker (KRaft, one node) for development and tests.

    State lives in $STREAMS_HOME/broker; the jars are assembled once with Maven into
    $STREAMS_HOME/broker-cache. With STREAMS_KAFKA_BOOTSTRAP set, that cluster is used.
    """


@broker.command()
@click.option("--port", type=_PORT, help="client port (default: a free port, kept on restart)")
@click.option("--controller-port", type=_PORT, help="KRaft controller port (default: free)")
@click.option("--heap-mb", type=click.IntRange(128, 8192), default=512, show_default=True)
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_START_TIMEOUT_S,
    show_default=True,
    help="how long to wait for the broker to answer",
)
@click.option("--fresh", is_flag=True, help="delete the local broker's data first")
@click.option(
    "--sasl-ssl",
    is_flag=True,
    help="also listen with SASL_SSL (SCRAM-SHA-512 over TLS, a local CA); needs a fresh data dir",
)
def start(
    port: int | None,
    controller_port: int | None,
    heap_mb: int,
    timeout_s: float,
    fresh: bool,
    sasl_ssl: bool,
) -> None:
    """Start the local broker; the last line printed is its host:port."""
    settings = Settings()
    if settings.kafka_bootstrap:
        click.echo("STREAMS_KAFKA_BOOTSTRAP is set: using the configured cluster, not starting one")
        click.echo(settings.kafka_bootstrap)
        return
    local = LocalBroker.from_settings(
        settings,
        port=port,
        controller_port=controller_port,
        heap_mb=heap_mb,
        progress=_progress,
        sasl_ssl=sasl_ssl,
    )
    before = local.status()
    status = local.start(timeout_s=timeout_s, fresh=fresh)
    verb = "already running" if before.running else "started"
    click.echo(f"local broker {verb} (pid {status.pid}, data {status.data_dir})")
    click.echo(f"log: {status.log_file}")
    _echo_sasl_ssl(status.sasl_ssl)
    click.echo(status.bootstrap)


@broker.command()
@click.option(
    "--timeout-s",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_STOP_TIMEOUT_S,
    show_default=True,
    help="wait this long after SIGTERM before SIGKILL",
)
def stop(timeout_s: float) -> None:
    """Stop the local broker (its data is kept; `start --fresh` wipes it)."""
    local = LocalBroker.from_settings(Settings(), progress=_progress)
    if local.stop(timeout_s=timeout_s):
        click.echo("local broker stopped")
    else:
        click.echo("local broker is not running")


@broker.command()
def status() -> None:
    """Exit 0 and print host:port when the broker answers; exit 1 otherwise."""
    settings = Settings()
    if settings.kafka_bootstrap:
        _configured_status(settings)
        return
    current = LocalBroker.from_settings(settings).status()
    if not current.running:
        click.echo("local broker is not running")
        sys.exit(1)
    if not current.answering:
        click.echo(f"local broker (pid {current.pid}) is running but does not answer yet")
        sys.exit(1)
    click.echo(f"local broker running (pid {current.pid}, data {current.data_dir})")
    click.echo(f"console: {kcat_command(current.bootstrap or '', settings)}")
    _echo_sasl_ssl(current.sasl_ssl)
    click.echo(current.bootstrap or "")


def _echo_sasl_ssl(listener: SaslSslListener | None) -> None:
    if listener is None:
        return
    click.echo(f"SASL_SSL listener on {listener.bootstrap}; clients use:")
    for name, value in listener.env().items():
        shown = "<in .streams/broker/sasl-password>" if name == "STREAMS_SASL_PASSWORD" else value
        click.echo(f"  {name}={shown}")


def kcat_command(bootstrap: str, settings: Settings, topic: str = "email.dlq") -> str:
    """The kcat line that reads ``topic`` (with headers) from ``bootstrap``, security included."""
    parts = ["kcat", "-b", bootstrap]
    for key, value in settings.kafka_security().items():
        if key == "security.protocol" and value == "PLAINTEXT":
            continue
        shown = "$STREAMS_SASL_PASSWORD" if key == "sasl.password" else str(value)
        parts += ["-X", f"{key}={shown}"]
    parts += ["-t", f"{settings.topic_prefix}{topic}", "-C", "-o", "beginning", "-e"]
    parts += ["-f", "'%h\\n%k\\n%s\\n'"]
    return " ".join(parts)


def _configured_status(settings: Settings) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from streams.broker.clients import base_conf

    admin = AdminClient(base_conf(settings, log_level=0))
    try:
        admin.list_topics(timeout=5.0)
    except KafkaException as exc:
        click.echo(f"configured cluster {settings.kafka_bootstrap} does not answer: {exc}")
        sys.exit(1)
    click.echo("STREAMS_KAFKA_BOOTSTRAP is set: the configured cluster answers")
    click.echo(f"console: {kcat_command(settings.kafka_bootstrap or '', settings)}")
    click.echo(settings.kafka_bootstrap or "")
