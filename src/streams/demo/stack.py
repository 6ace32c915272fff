"""What ``streams up`` starts, one function per part, in the order the supervisor
(``runner.py``) calls them: the cluster, the topics, the peers, the worker.

Each reports what it did through ``say(label, text)`` and raises ``UpError`` naming what did
not come up and where to look. The worker is a ``streams.testing.processes.WorkerProcess``
in its own session (so a Ctrl-C in the terminal reaches only the supervisor, which stops it
in order) that gets SIGTERM from the kernel should the supervisor die without cleaning up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.demo.scenario import BOUNCE_ADDRESS, GREYLIST_ADDRESS
from streams.demo.services import ReceiverThread, SMTPCatcher
from streams.errors import StreamsError
from streams.settings import Settings
from streams.testing import processes
from streams.testing.processes import LOOPBACK, free_port, port_free

if TYPE_CHECKING:
    from streams.broker.local import LocalBroker

Say = Callable[[str, str], None]

FAMILIES = ("email", "webhook", "push", "consent")  # push, consent: demo/notify.py
DEFAULT_HTTP_PORT = 6066
# Stable ports (when free): retries left in the topics by an interrupted run still reach
# the peers of the next run instead of a closed port.
DEFAULT_SMTP_PORT = 1025
DEFAULT_WEBHOOK_PORT = 8099
WORKER_READY_TIMEOUT_S = 90.0
WORKER_READY_POLL_S = 0.25


class UpError(StreamsError):
    """Something ``streams up`` needs did not come up; the message says what and where."""


def preferred_port(explicit: int | None, default: int) -> int:
    """``explicit`` as given (0 = any free port), else ``default`` when free, else 0."""
    if explicit is not None:
        return explicit
    return default if port_free(default) else 0


# --- the cluster and its topics ----------------------------------------------------------


@dataclass
class Cluster:
    """The cluster of this run; ``broker`` is set when this run started a local one."""

    settings: Settings  # bound to the cluster (bootstrap, replication override)
    broker: LocalBroker | None
    broker_log: Path | None

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap or ""


def start_cluster(settings: Settings, *, keep_broker: bool, say: Say) -> Cluster:
    """The configured cluster, else the local broker (already running, or started here)."""
    override = settings.replication_factor_override
    broker: LocalBroker | None = None
    broker_log: Path | None = None
    if settings.kafka_bootstrap:
        bootstrap = settings.kafka_bootstrap
        brokers = _broker_count(settings)
        note = ""
        if override is None and brokers == 1:
            override = 1
            note = ", so replication override 1"
        say(
            "kafka",
            f"{bootstrap} (from STREAMS_KAFKA_BOOTSTRAP; {brokers} broker"
            f"{'s' if brokers != 1 else ''}{note})",
        )
    else:
        from streams.broker.local import LocalBroker

        local = LocalBroker.from_settings(
            settings,
            die_with_parent=not keep_broker,
            progress=lambda text: say("", click.style(text, dim=True)),
        )
        current = local.status()
        if current.running and current.answering and current.bootstrap:
            bootstrap = current.bootstrap
            say(
                "kafka",
                f"STREAMS_KAFKA_BOOTSTRAP is not set: using the local broker already running "
                f"on {bootstrap} (pid {current.pid}; left running at the end)",
            )
        else:
            say(
                "kafka",
                "STREAMS_KAFKA_BOOTSTRAP is not set: starting a local Kafka broker "
                f"(state in {local.state_dir})",
            )
            started = time.monotonic()
            status = local.start()
            broker = local
            bootstrap = status.bootstrap or ""
            say(
                "",
                f"local broker on {bootstrap} (pid {status.pid}) ready in "
                f"{time.monotonic() - started:.1f}s"
                + (
                    "; --keep-broker: left running at the end"
                    if keep_broker
                    else "; stopped at the end"
                ),
            )
        broker_log = local.log_file
        if override is None:
            override = 1
    bound = Settings(kafka_bootstrap=bootstrap, replication_factor_override=override)
    return Cluster(bound, broker, broker_log)


def _broker_count(settings: Settings) -> int:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from streams.broker.clients import base_conf

    admin = AdminClient(base_conf(settings, log_level=0))
    try:
        metadata = admin.list_topics(timeout=10.0)
    except KafkaException as exc:
        raise UpError(
            f"the cluster at {settings.kafka_bootstrap} (STREAMS_KAFKA_BOOTSTRAP) does not "
            f"answer: {exc}; unset it to start a local broker"
        ) from None
    return len(metadata.brokers)


def apply_topics(settings: Settings, say: Say) -> None:
    """``topics apply`` for the demo's families."""
    from streams.broker.admin import apply
    from streams.catalog import load_catalog

    catalog = load_catalog(settings.catalog_path)
    for name in FAMILIES:
        catalog.family(name)
    started = time.monotonic()
    plan = apply(settings, catalog)
    created = len(plan.creates)
    changed = len(plan.partition_increases) + len(plan.config_changes)
    prefix = settings.topic_prefix
    where = f"prefix {prefix!r}" if prefix else "no prefix"
    rf = settings.replication_factor_override
    what = (
        f"{created} created, {changed} changed"
        if created or changed
        else "all already match topics.yaml"
    )
    say(
        "topics",
        f"{what} ({where}, app id {settings.app_id!r}"
        + (f", replication {rf}" if rf else "")
        + f") in {time.monotonic() - started:.1f}s",
    )


# --- the peers ---------------------------------------------------------------------------


def start_smtp(port: int, log_dir: Path, say: Say) -> SMTPCatcher:
    smtp = SMTPCatcher(
        LOOPBACK,
        port,
        log_path=log_dir / "smtp.jsonl",
        reject=(BOUNCE_ADDRESS,),
        greylist=(GREYLIST_ADDRESS,),
    )
    try:
        smtp.start()
    except OSError as exc:
        raise UpError(f"cannot start the SMTP catcher on {LOOPBACK}:{port}: {exc}") from None
    say(
        "smtp",
        f"catching mail on {LOOPBACK}:{smtp.port} "
        f"(550 for {BOUNCE_ADDRESS}, greylists {GREYLIST_ADDRESS} once)",
    )
    return smtp


def start_receiver(port: int, secret: str, log_dir: Path, say: Say) -> ReceiverThread:
    receiver = ReceiverThread(secret, LOOPBACK, port, log_path=log_dir / "webhooks.jsonl")
    try:
        receiver.start()
    except OSError as exc:
        raise UpError(f"cannot start the webhook receiver on {LOOPBACK}:{port}: {exc}") from None
    say(
        "webhooks",
        f"receiving on {receiver.url} (verifies signatures with a per-run secret shared "
        "with the worker)",
    )
    return receiver


# --- the worker --------------------------------------------------------------------------


def choose_http_port(explicit: int | None, settings: Settings) -> int:
    """The worker's metrics/health port: ``--http-port`` (0: any free one, since we must
    know it to poll it), else STREAMS_HTTP_PORT, else 6066 when free, else any."""
    if explicit is not None:
        return explicit or free_port()
    if "STREAMS_HTTP_PORT" in os.environ:
        return settings.http_port
    return DEFAULT_HTTP_PORT if port_free(DEFAULT_HTTP_PORT) else free_port()


def worker_env(settings: Settings, http_port: int, smtp_port: int, secret: str) -> dict[str, str]:
    """Our environment without SMTP credentials, bound to this run's cluster and peers."""
    inherit = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STREAMS_SMTP_USERNAME", "STREAMS_SMTP_PASSWORD")
    }
    extra = {
        "STREAMS_SCHEMAS_DIR": str(settings.schemas_dir.resolve()),
        "STREAMS_HTTP_HOST": LOOPBACK,
        "STREAMS_SMTP_HOST": LOOPBACK,
        "STREAMS_SMTP_PORT": str(smtp_port),
        "STREAMS_SMTP_STARTTLS": "false",
        "STREAMS_WEBHOOK_ALLOW_HOSTS": LOOPBACK,
        "STREAMS_WEBHOOK_SIGNING_SECRET": secret,
        "PYTHONUNBUFFERED": "1",
    }
    return processes.worker_env(settings, http_port=http_port, inherit=inherit, extra=extra)


def start_worker(
    env: dict[str, str], http_port: int, log_path: Path, run_marker: str, loglevel: str
) -> processes.WorkerProcess:
    """``streams worker`` for FAMILIES, its output appended to ``log_path`` after a
    ``==== <run_marker> ...`` header; not waited for (see ``wait_worker_ready``)."""
    worker = processes.WorkerProcess(
        processes.worker_command(FAMILIES, loglevel=loglevel),
        env,
        log_path,
        own_session=True,  # Ctrl-C reaches us; we stop the worker in order
        die_with_parent=True,
        log_header=run_marker,
        http_port=http_port,
    )
    worker.start()
    return worker


def wait_worker_ready(worker: processes.WorkerProcess, excerpt: Callable[[], str]) -> float:
    """Seconds until ``/health/ready`` answered 200; ``UpError`` with the log's
    ``excerpt()`` when the worker exits first or is not ready in time."""
    try:
        return worker.wait_healthy(WORKER_READY_TIMEOUT_S, interval_s=WORKER_READY_POLL_S)
    except processes.NotReady as exc:
        if exc.exit_code is not None:
            raise UpError(
                f"the worker exited with code {exc.exit_code} before it was ready; "
                f"from {worker.log_path}:\n{excerpt()}"
            ) from None
        raise UpError(
            f"the worker was not ready within {WORKER_READY_TIMEOUT_S:g}s "
            f"({worker.url('/health/ready')}: {exc.last}); from {worker.log_path}:\n{excerpt()}"
        ) from None


def stop_worker(worker: processes.WorkerProcess, bound_s: float, hurry: Callable[[], bool]) -> str:
    """SIGTERM to the worker's group, SIGKILL after ``bound_s`` or at ``hurry()``; what
    happened, for the "stopped:" line."""
    stopped = worker.stop(bound_s, hurry=hurry)
    if stopped.had_exited:
        return f"worker (had exited, code {stopped.returncode})"
    how = "SIGKILL" if stopped.killed else f"exit {stopped.returncode}"
    return f"worker ({how}, {stopped.elapsed_s:.1f}s)"
