"""``streams up``: start everything, run the demo through it, stop everything.

Order: the cluster (the configured one, or the local broker, started here when
``STREAMS_KAFKA_BOOTSTRAP`` is unset), ``topics apply``, the SMTP catcher and webhook
receiver (threads of this process), the worker (a subprocess in its own session, so a
Ctrl-C in the terminal reaches only us and we stop it in order), then the demo events.

Stopping (Ctrl-C, SIGTERM, SIGHUP, the end of ``--exit-when-done``, or an error) runs
in reverse: the worker gets SIGTERM and is waited for (SIGKILL after its shutdown bound or
at a second Ctrl-C), the peers stop, and the local broker stops if this run started it
(``--keep-broker`` leaves it running). The worker and a broker started here also get
SIGTERM from the kernel should this process die without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click

from streams.demo import metrics as m
from streams.demo.display import (
    FamilyView,
    RunView,
    WhereToLook,
    progress_line,
    progress_lines,
    summary_lines,
    where_lines,
)
from streams.demo.scenario import BOUNCE_ADDRESS, GREYLIST_ADDRESS, Scenario, build_scenario
from streams.demo.services import ReceiverThread, SMTPCatcher
from streams.errors import StreamsError
from streams.settings import Settings

FAMILIES = ("email", "webhook")
DEFAULT_HTTP_PORT = 6066
# Stable ports (when free): retries left in the topics by an interrupted run still reach
# the peers of the next run instead of a closed port.
DEFAULT_SMTP_PORT = 1025
DEFAULT_WEBHOOK_PORT = 8099
WORKER_READY_TIMEOUT_S = 90.0
TICK_S = 1.0  # progress redraw period
POLL_S = 0.25  # how often the settled check runs
_PR_SET_PDEATHSIG = 1
_LOOPBACK = "127.0.0.1"


class StopRequested(Exception):
    """SIGTERM or SIGHUP arrived (SIGINT arrives as KeyboardInterrupt)."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


class UpError(StreamsError):
    """Something ``streams up`` needs did not come up; the message says what and where."""


@dataclass(frozen=True)
class UpOptions:
    exit_when_done: bool = False
    keep_broker: bool = False
    timeout_s: float = 120.0
    smtp_port: int | None = None  # None: DEFAULT_SMTP_PORT when free, else any free port
    webhook_port: int | None = None  # None: DEFAULT_WEBHOOK_PORT when free, else any
    http_port: int | None = None
    demo: bool = True
    worker_loglevel: str = "info"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
    return True


def _preferred(explicit: int | None, default: int) -> int:
    """``explicit`` as given (0 = any free port), else ``default`` when free, else 0."""
    if explicit is not None:
        return explicit
    return default if _port_free(default) else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _failure_excerpt(path: Path, since_marker: str, lines: int = 20) -> str:
    """The part of a worker log that explains a crash: from the first ERROR/CRITICAL line
    after ``since_marker`` (our header for this run), else the last lines."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no log)"
    start = text.rfind(since_marker)
    run = (text[start:] if start >= 0 else text).splitlines()
    first = next(
        (i for i, line in enumerate(run) if "[ERROR]" in line or "[CRITICAL]" in line), None
    )
    chosen = run[first : first + lines] if first is not None else run[-lines:]
    return "\n".join("    " + line for line in chosen)


class Up:
    """One ``streams up`` run. ``run()`` returns the exit code."""

    def __init__(
        self,
        options: UpOptions,
        *,
        echo: Callable[..., Any] = click.echo,
        interactive: bool | None = None,
    ) -> None:
        self.options = options
        self.echo = echo
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self.settings = Settings()
        self.home = self.settings.home.resolve()
        self.log_dir = self.home / "logs"
        self.run_id = secrets.token_hex(3)
        self.secret = secrets.token_urlsafe(24)
        self._hurry = False
        self._stopping = False
        self._broker: Any = None  # LocalBroker when this run started it
        self._broker_log: Path | None = None
        self._bootstrap = ""
        self._smtp: SMTPCatcher | None = None
        self._receiver: ReceiverThread | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._worker_log = self.log_dir / "worker.log"
        self._http_port = 0
        self._tail: Any = None
        self._snapshot: m.Snapshot = {}
        self._drawn = 0
        self._last_line = ""

    # --- output ---------------------------------------------------------------------------

    def say(self, label: str, text: str) -> None:
        self.echo(f"  {click.style(f'{label:<9}', fg='cyan')} {text}")

    # --- the whole run -------------------------------------------------------------------

    def run(self) -> int:
        previous = self._install_signals()
        code = 1
        result: int | None = None  # the demo's verdict once its summary is printed
        try:
            self.echo(click.style("streams up", bold=True) + " — the pipeline on this machine")
            self._start_cluster()
            self._apply_topics()
            self._start_peers()
            self._start_worker()
            result = code = self._demo() if self.options.demo else 0
            if not self.options.exit_when_done:
                self._serve_until_stopped()
        except KeyboardInterrupt:
            self.echo("\ninterrupted (Ctrl-C): stopping")
            code = 130 if result is None else result
        except StopRequested as stop:
            self.echo(f"\n{stop.signame}: stopping")
            code = 143 if result is None else result
        except StreamsError as exc:
            self.echo(click.style(f"error: {exc}", fg="red"))
            code = 1
        finally:
            self._stop_all()
            self._restore_signals(previous)
        return code

    # --- signals --------------------------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        def stop(signum: int, frame: FrameType | None) -> None:
            if self._stopping:
                self._hurry = True
                return
            raise StopRequested(signal.Signals(signum).name)

        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, stop)
        # Ctrl-C must stop us even when started with SIGINT ignored (a background job)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _hurry_handlers(self) -> None:
        def hurry(signum: int, frame: FrameType | None) -> None:
            if not self._hurry:
                self._hurry = True
                self.echo("  (stopping now: the worker gets SIGKILL)")

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, hurry)

    # --- starting -------------------------------------------------------------------------

    def _start_cluster(self) -> None:
        settings = self.settings
        override = settings.replication_factor_override
        if settings.kafka_bootstrap:
            self._bootstrap = settings.kafka_bootstrap
            brokers = self._broker_count(settings)
            note = ""
            if override is None and brokers == 1:
                override = 1
                note = ", so replication override 1"
            self.say(
                "kafka",
                f"{self._bootstrap} (from STREAMS_KAFKA_BOOTSTRAP; {brokers} broker"
                f"{'s' if brokers != 1 else ''}{note})",
            )
        else:
            from streams.broker.local import LocalBroker

            local = LocalBroker.from_settings(
                settings,
                die_with_parent=not self.options.keep_broker,
                progress=lambda text: self.say("", click.style(text, dim=True)),
            )
            current = local.status()
            if current.running and current.answering and current.bootstrap:
                self._bootstrap = current.bootstrap
                self.say(
                    "kafka",
                    f"STREAMS_KAFKA_BOOTSTRAP is not set: using the local broker already running "
                    f"on {self._bootstrap} (pid {current.pid}; left running at the end)",
                )
            else:
                self.say(
                    "kafka",
                    "STREAMS_KAFKA_BOOTSTRAP is not set: starting a local Kafka broker "
                    f"(state in {local.state_dir})",
                )
                started = time.monotonic()
                status = local.start()
                self._broker = local
                self._bootstrap = status.bootstrap or ""
                self.say(
                    "",
                    f"local broker on {self._bootstrap} (pid {status.pid}) ready in "
                    f"{time.monotonic() - started:.1f}s"
                    + (
                        "; --keep-broker: left running at the end"
                        if self.options.keep_broker
                        else "; stopped at the end"
                    ),
                )
            self._broker_log = local.log_file
            if override is None:
                override = 1
        self.settings = Settings(
            kafka_bootstrap=self._bootstrap, replication_factor_override=override
        )

    def _broker_count(self, settings: Settings) -> int:
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

    def _apply_topics(self) -> None:
        from streams.broker.admin import apply
        from streams.catalog import load_catalog

        catalog = load_catalog(self.settings.catalog_path)
        for name in FAMILIES:
            catalog.family(name)
        started = time.monotonic()
        plan = apply(self.settings, catalog)
        created = len(plan.creates)
        changed = len(plan.partition_increases) + len(plan.config_changes)
        prefix = self.settings.topic_prefix
        where = f"prefix {prefix!r}" if prefix else "no prefix"
        rf = self.settings.replication_factor_override
        what = (
            f"{created} created, {changed} changed"
            if created or changed
            else "all already match topics.yaml"
        )
        self.say(
            "topics",
            f"{what} ({where}, app id {self.settings.app_id!r}"
            + (f", replication {rf}" if rf else "")
            + f") in {time.monotonic() - started:.1f}s",
        )

    def _start_peers(self) -> None:
        smtp_port = _preferred(self.options.smtp_port, DEFAULT_SMTP_PORT)
        smtp = SMTPCatcher(
            _LOOPBACK,
            smtp_port,
            log_path=self.log_dir / "smtp.jsonl",
            reject=(BOUNCE_ADDRESS,),
            greylist=(GREYLIST_ADDRESS,),
        )
        try:
            smtp.start()
        except OSError as exc:
            raise UpError(
                f"cannot start the SMTP catcher on {_LOOPBACK}:{smtp_port}: {exc}"
            ) from None
        self._smtp = smtp
        self.say(
            "smtp",
            f"catching mail on {_LOOPBACK}:{smtp.port} "
            f"(550 for {BOUNCE_ADDRESS}, greylists {GREYLIST_ADDRESS} once)",
        )
        webhook_port = _preferred(self.options.webhook_port, DEFAULT_WEBHOOK_PORT)
        receiver = ReceiverThread(
            self.secret, _LOOPBACK, webhook_port, log_path=self.log_dir / "webhooks.jsonl"
        )
        try:
            receiver.start()
        except OSError as exc:
            raise UpError(
                f"cannot start the webhook receiver on {_LOOPBACK}:{webhook_port}: {exc}"
            ) from None
        self._receiver = receiver
        self.say(
            "webhooks",
            f"receiving on {receiver.url} (verifies signatures with a per-run secret shared "
            "with the worker)",
        )

    def _choose_http_port(self) -> int:
        if self.options.http_port is not None:
            return self.options.http_port or _free_port()  # 0: we must know it to poll it
        if "STREAMS_HTTP_PORT" in os.environ:
            return self.settings.http_port
        return DEFAULT_HTTP_PORT if _port_free(DEFAULT_HTTP_PORT) else _free_port()

    def _worker_env(self) -> dict[str, str]:
        assert self._smtp is not None
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("STREAMS_SMTP_USERNAME", "STREAMS_SMTP_PASSWORD")
        }
        s = self.settings
        env.update(
            {
                "STREAMS_KAFKA_BOOTSTRAP": self._bootstrap,
                "STREAMS_TOPIC_PREFIX": s.topic_prefix,
                "STREAMS_APP_ID": s.app_id,
                "STREAMS_HOME": str(self.home),
                "STREAMS_CATALOG_PATH": str(s.catalog_path.resolve()),
                "STREAMS_SCHEMAS_DIR": str(s.schemas_dir.resolve()),
                "STREAMS_HTTP_HOST": _LOOPBACK,
                "STREAMS_HTTP_PORT": str(self._http_port),
                "STREAMS_SMTP_HOST": _LOOPBACK,
                "STREAMS_SMTP_PORT": str(self._smtp.port),
                "STREAMS_SMTP_STARTTLS": "false",
                "STREAMS_WEBHOOK_ALLOW_HOSTS": _LOOPBACK,
                "STREAMS_WEBHOOK_SIGNING_SECRET": self.secret,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if s.replication_factor_override is not None:
            env["STREAMS_REPLICATION_FACTOR_OVERRIDE"] = str(s.replication_factor_override)
        return env

    def _start_worker(self) -> None:
        self._http_port = self._choose_http_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "streams", "worker"]
        for name in FAMILIES:
            cmd += ["--family", name]
        cmd += ["--loglevel", self.options.worker_loglevel]
        with self._worker_log.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n==== streams up {self.run_id} {stamp}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._worker = subprocess.Popen(
                cmd,
                env=self._worker_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop the worker in order
                preexec_fn=_die_with_parent,
            )
        started = time.monotonic()
        url = f"http://{_LOOPBACK}:{self._http_port}/health/ready"
        last: str = "no answer"
        while True:
            code = self._worker.poll()
            if code is not None:
                raise UpError(
                    f"the worker exited with code {code} before it was ready; "
                    f"from {self._worker_log}:\n{self._worker_excerpt()}"
                )
            status, body = _get_json(url)
            if status == 200:
                break
            if status:
                last = f"HTTP {status} {json.dumps(body.get('checks', body))}"
            if time.monotonic() - started > WORKER_READY_TIMEOUT_S:
                raise UpError(
                    f"the worker was not ready within {WORKER_READY_TIMEOUT_S:g}s ({url}: {last}); "
                    f"from {self._worker_log}:\n{self._worker_excerpt()}"
                )
            time.sleep(0.25)
        self.say(
            "worker",
            f"pid {self._worker.pid}, families {', '.join(FAMILIES)}, ready in "
            f"{time.monotonic() - started:.1f}s; metrics {self.metrics_url}",
        )

    def _worker_excerpt(self) -> str:
        return _failure_excerpt(self._worker_log, f"==== streams up {self.run_id} ")

    @property
    def metrics_url(self) -> str:
        return f"http://{_LOOPBACK}:{self._http_port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://{_LOOPBACK}:{self._http_port}/health/ready"

    def _where(self) -> WhereToLook:
        from streams.core.topology import dlq_topic

        assert self._smtp is not None and self._receiver is not None
        return WhereToLook(
            metrics_url=self.metrics_url,
            health_url=self.health_url,
            bootstrap=self._bootstrap,
            dlq_topics={f: dlq_topic(self.settings.topic_prefix, f) for f in FAMILIES},
            smtp_log=self._smtp.log_path,
            webhook_log=self._receiver.log_path,
            worker_log=self._worker_log,
            broker_log=self._broker_log,
            smtp_address=f"{_LOOPBACK}:{self._smtp.port}",
            webhook_url=self._receiver.url,
        )

    # --- the demo -------------------------------------------------------------------------

    def _demo(self) -> int:
        from streams.core.topology import dlq_topic
        from streams.dlq.reader import DlqTail
        from streams.dlq.records import DlqRecord
        from streams.errors import BatchPublishError
        from streams.publish.publisher import Publisher

        assert self._receiver is not None and self._smtp is not None
        scenario = build_scenario(self.run_id, self._receiver.url)
        self._tail = DlqTail(
            self.settings, [dlq_topic(self.settings.topic_prefix, f) for f in FAMILIES]
        )
        self._tail.start()
        baseline = self._scrape()
        started = time.monotonic()
        with Publisher(self.settings, producer_name="streams-up") as publisher:
            try:
                publisher.publish_batch([e.item() for e in scenario.events])
            except BatchPublishError as exc:
                lines = [f"{scenario.events[i].event_id}: {err}" for i, err in exc.errors.items()]
                raise UpError(
                    "publishing the demo events failed:\n  " + "\n  ".join(lines)
                ) from None
        counts = scenario.published()
        self.say(
            "publish",
            f"{sum(counts.values())} events ("
            + ", ".join(f"{n} {f}" for f, n in counts.items())
            + f") in {time.monotonic() - started:.2f}s; run id {self.run_id}",
        )
        self.echo("")
        dead: dict[str, tuple[str, DlqRecord]] = {}
        drawn_at = 0.0
        while True:
            tick = time.monotonic()
            for record in self._tail.poll(0.05):
                if record.event_id is not None and scenario.owns(record.event_id):
                    dead[record.event_id] = (scenario.by_id[record.event_id].family, record)
            view = self._view(scenario, baseline, dead, started)
            settled = self._settled(view)
            if settled or tick - drawn_at >= TICK_S:
                self._draw(view)
                drawn_at = tick
            if settled or view.elapsed_s > self.options.timeout_s:
                break
            self._check_worker()
            time.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
        problems = self._problems(scenario, view, dead, settled)
        notes = _count_leftovers(view) if not problems else []
        for line in summary_lines(
            view, settled=settled, problems=problems, notes=notes, where=self._where()
        ):
            self.echo(line)
        ok = settled and not problems
        if not self.options.exit_when_done:
            self.echo("")
            self.echo(
                "still running: the worker, the SMTP catcher and the webhook receiver keep "
                "serving; publish more with `streams publish`; Ctrl-C stops everything"
                + (
                    ""
                    if self._broker is None or self.options.keep_broker
                    else " (and the local broker)"
                )
            )
        return 0 if ok else 1

    def _scrape(self) -> m.Snapshot:
        """The worker's metrics now; the last good reading when it does not answer."""
        try:
            self._snapshot = m.scrape(self.metrics_url)
        except (OSError, ValueError):
            self._check_worker()
        return self._snapshot

    def _view(
        self,
        scenario: Scenario,
        baseline: m.Snapshot,
        dead: dict[str, Any],
        started: float,
    ) -> RunView:
        assert self._smtp is not None and self._receiver is not None
        now = m.delta(self._scrape(), baseline)
        peers = {"email": self._smtp.accepted(), "webhook": self._receiver.delivered()}
        published = scenario.published()
        expected = scenario.expected_dlq()
        families = []
        for name in scenario.families:
            counts = now.get(name, m.FamilyCounts())
            ids = {e.event_id for e in scenario.events if e.family == name}
            families.append(
                FamilyView(
                    name=name,
                    published=published[name],
                    expected_dlq=expected[name],
                    done=int(counts.done),
                    dlq=int(counts.dead_lettered),
                    retries=int(counts.retried + counts.deferred),
                    retrying=int(counts.waiting),
                    peer_done=len(ids & peers.get(name, set())),
                    dlq_seen=sum(1 for fam, _ in dead.values() if fam == name),
                )
            )
        return RunView(
            families=families,
            elapsed_s=time.monotonic() - started,
            dead_letters=list(dead.values()),
        )

    def _settled(self, view: RunView) -> bool:
        """Every event of the run reached a peer or the DLQ, and the metrics caught up."""
        return all(f.settled and f.peer_done + f.dlq_seen >= f.published for f in view.families)

    def _problems(
        self, scenario: Scenario, view: RunView, dead: dict[str, Any], settled: bool
    ) -> list[str]:
        assert self._smtp is not None and self._receiver is not None
        problems: list[str] = []
        for f in view.families:
            own_exact = f.peer_done + f.dlq_seen == f.published
            if f.done + f.dlq > f.published and own_exact and settled:
                continue  # events of an earlier run finished too: a note, see _count_leftovers
            if not f.adds_up:
                extra = (
                    " (the worker also finished events not published by this run: left over "
                    "from an earlier run with the same app id?)"
                    if f.done + f.dlq > f.published
                    else ""
                )
                problems.append(
                    f"{f.name}: the metrics count {f.done} done + {f.dlq} in the DLQ = "
                    f"{f.done + f.dlq}, but {f.published} were published{extra}"
                )
            if f.dlq_seen != f.expected_dlq and settled:
                problems.append(
                    f"{f.name}: {f.dlq_seen} of this run's events are in the DLQ topic, "
                    f"{f.expected_dlq} expected"
                )
        peers = self._smtp.accepted() | self._receiver.delivered()
        for event in scenario.events:
            if event.event_id in dead:
                _, record = dead[event.event_id]
                actual = f"DLQ ({record.reason}: {record.error_message})"
                ok = event.expect == "dlq" and record.reason == event.expect_reason
            elif event.event_id in peers:
                actual, ok = "done", event.expect == "done"
            else:
                actual, ok = "still pending", False
            if not ok:
                want = "done" if event.expect == "done" else f"DLQ ({event.expect_reason})"
                label = f" [{event.note}]" if event.note else ""
                problems.append(
                    f"{event.family} {event.event_id}{label}: expected {want}, got {actual}"
                )
        return problems

    # --- drawing --------------------------------------------------------------------------

    def _draw(self, view: RunView) -> None:
        if self.interactive:
            lines = progress_lines(view)
            if self._drawn:
                self.echo(f"\x1b[{self._drawn}F\x1b[J", nl=False)
            for line in lines:
                self.echo(line)
            self._drawn = len(lines)
            return
        line = progress_line(view)
        changed = line.split("]", 1)[1]
        if changed != self._last_line:
            self.echo(line)
            self._last_line = changed

    # --- serving --------------------------------------------------------------------------

    def _serve_until_stopped(self) -> None:
        if not self.options.demo:
            self.echo("")
            for line in where_lines(self._where()):
                self.echo(line)
            self.echo("")
            self.echo("running until Ctrl-C (SIGTERM works too)")
        last = self._scrape()
        while True:
            time.sleep(TICK_S)
            self._check_worker()
            now = self._scrape()
            if not now:
                continue
            changes = []
            for family, counts in m.delta(now, last).items():
                for label, value in (
                    ("done", counts.done),
                    ("retried", counts.retried),
                    ("in DLQ", counts.dead_lettered),
                ):
                    if value:
                        changes.append(f"{family} +{int(value)} {label}")
            if changes:
                self.echo(f"  {time.strftime('%H:%M:%S')}  " + ", ".join(changes))
            last = now

    def _check_worker(self) -> None:
        if self._worker is not None and (code := self._worker.poll()) is not None:
            raise UpError(
                f"the worker exited unexpectedly with code {code}; "
                f"from {self._worker_log}:\n{self._worker_excerpt()}"
            )

    # --- stopping -------------------------------------------------------------------------

    def _stop_all(self) -> None:
        self._stopping = True
        self._hurry_handlers()
        stopped: list[str] = []
        if self._tail is not None:
            with contextlib.suppress(Exception):
                self._tail.close()
        if self._worker is not None:
            stopped.append(self._stop_worker(self._worker))
        if self._receiver is not None:
            self._receiver.stop()
            stopped.append("webhook receiver")
        if self._smtp is not None:
            self._smtp.stop()
            stopped.append("SMTP catcher")
        if self._broker is not None:
            if self.options.keep_broker:
                self.echo(
                    f"  local broker left running on {self._bootstrap} (--keep-broker); "
                    "stop it with `streams broker stop`"
                )
            else:
                try:
                    self._broker.stop()
                    stopped.append("local broker")
                except Exception as exc:
                    self.echo(click.style(f"  could not stop the local broker: {exc}", fg="red"))
        if stopped:
            self.echo(f"stopped: {', '.join(stopped)}")

    def _stop_worker(self, proc: subprocess.Popen[bytes]) -> str:
        if proc.poll() is not None:
            return f"worker (had exited, code {proc.returncode})"
        started = time.monotonic()
        bound_s = self.settings.shutdown_timeout_s + 5.0
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        killed = False
        while proc.poll() is None:
            if self._hurry or time.monotonic() - started > bound_s:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                proc.wait(10)
                break
            time.sleep(0.1)
        how = "SIGKILL" if killed else f"exit {proc.returncode}"
        return f"worker ({how}, {time.monotonic() - started:.1f}s)"


def _count_leftovers(view: RunView) -> list[str]:
    """Families whose metrics counted more than this run published while every event of
    the run is accounted for (at a peer or in the DLQ): the surplus are events an earlier,
    interrupted run left in the retry tiers. Their rows switch to this run's own counts."""
    notes = []
    for f in view.families:
        surplus = f.done + f.dlq - f.published
        if surplus > 0 and f.peer_done + f.dlq_seen == f.published:
            notes.append(
                f"{f.name}: the worker also finished {surplus} event"
                f"{'s' if surplus != 1 else ''} left in the retry tiers by an earlier run "
                f"(metrics: {f.done} done, {f.dlq} in the DLQ); the row counts this run only"
            )
            f.done, f.dlq = f.peer_done, f.dlq_seen
    return notes


def _get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), json.loads(exc.read() or b"{}")
        except ValueError:
            return int(exc.code), {}
    except (OSError, ValueError):
        return 0, {}
