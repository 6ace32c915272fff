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

This module is the supervisor: the order, the signals, the demo's run loop, serving and
stopping. Starting each part is ``stack.py`` (the worker through the shared process
harness, ``streams.testing.processes``); what the counts mean is ``verdict.py`` (pure).
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from streams.demo import api_stack, stack
from streams.demo import metrics as m
from streams.demo import verdict as v
from streams.demo.display import (
    RunView,
    WhereToLook,
    progress_line,
    progress_lines,
    summary_lines,
    where_lines,
)
from streams.demo.scenario import Scenario, build_scenario
from streams.demo.services import ReceiverThread, SMTPCatcher
from streams.demo.stack import FAMILIES, UpError
from streams.errors import StreamsError
from streams.settings import Settings
from streams.testing.processes import LOOPBACK, NotReady, WorkerProcess

if TYPE_CHECKING:
    from streams.broker.local import LocalBroker

__all__ = ["StopRequested", "Up", "UpError", "UpOptions"]

TICK_S = 1.0  # progress redraw period
POLL_S = 0.25  # how often the settled check runs


class StopRequested(Exception):
    """SIGTERM or SIGHUP arrived (SIGINT arrives as KeyboardInterrupt)."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@dataclass(frozen=True)
class UpOptions:
    exit_when_done: bool = False
    keep_broker: bool = False
    timeout_s: float = 120.0
    smtp_port: int | None = None  # None: DEFAULT_SMTP_PORT when free, else any free port
    webhook_port: int | None = None  # None: DEFAULT_WEBHOOK_PORT when free, else any
    http_port: int | None = None
    demo: bool = True
    money: bool = True  # the money step after the demo (demo/money.py)
    worker_loglevel: str = "info"


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
        self._broker: LocalBroker | None = None  # when this run started it
        self._broker_log: Path | None = None
        self._bootstrap = ""
        self._smtp: SMTPCatcher | None = None
        self._receiver: ReceiverThread | None = None
        self._push: Any = None  # streams.testing.push_provider.ThreadedPushProvider
        self._worker: WorkerProcess | None = None
        self._api: api_stack.RunningApi | None = None
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
            stack.apply_topics(self.settings, self.say)
            self._start_peers()
            self._start_worker()
            self._start_api()
            result = code = self._demo() if self.options.demo else 0
            if self.options.demo and self.options.money:
                result = code = max(code, self._money())
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
        cluster = stack.start_cluster(
            self.settings, keep_broker=self.options.keep_broker, say=self.say
        )
        self.settings = cluster.settings
        self._bootstrap = cluster.bootstrap
        self._broker = cluster.broker
        self._broker_log = cluster.broker_log

    def _start_peers(self) -> None:
        smtp_port = stack.preferred_port(self.options.smtp_port, stack.DEFAULT_SMTP_PORT)
        self._smtp = stack.start_smtp(smtp_port, self.log_dir, self.say)
        webhook_port = stack.preferred_port(self.options.webhook_port, stack.DEFAULT_WEBHOOK_PORT)
        self._receiver = stack.start_receiver(webhook_port, self.secret, self.log_dir, self.say)
        from streams.demo.notify import INVALID_TOKEN
        from streams.testing.push_provider import ThreadedPushProvider

        self._push = ThreadedPushProvider()
        provider = self._push.__enter__()
        provider.invalid_devices.add(INVALID_TOKEN)
        self.say("push", f"provider on {provider.url} (OneSignal-shaped; 1 invalid token)")

    def _start_worker(self) -> None:
        assert self._smtp is not None
        self._http_port = stack.choose_http_port(self.options.http_port, self.settings)
        env = stack.worker_env(self.settings, self._http_port, self._smtp.port, self.secret)
        if self._push is not None:
            from streams.demo.notify import DEFAULT_QUIET_HOURS

            env["STREAMS_PUSH_API_URL"] = self._push.provider.url
            env.setdefault("STREAMS_PUSH_QUIET_HOURS", DEFAULT_QUIET_HOURS)
        self._worker = stack.start_worker(
            env,
            self._http_port,
            self._worker_log,
            f"streams up {self.run_id}",
            self.options.worker_loglevel,
        )
        ready_s = stack.wait_worker_ready(self._worker, self._worker_excerpt)
        self.say(
            "worker",
            f"pid {self._worker.started.pid}, families {', '.join(FAMILIES)}, ready in "
            f"{ready_s:.1f}s; metrics {self.metrics_url}",
        )

    def _start_api(self) -> None:
        try:
            self._api = api_stack.start_api(
                self.settings, self.log_dir / "api.log", f"streams up {self.run_id}"
            )
        except NotReady as exc:
            log = self.log_dir / "api.log"
            raise UpError(f"the API did not start ({exc}); see {log}") from None
        self.say("api", f"{self._api.url} (OpenAPI: {self._api.url}/openapi.json); dev token:")
        self.echo(f"            Authorization: Bearer {self._api.token}")

    def _worker_excerpt(self) -> str:
        assert self._worker is not None
        return self._worker.failure_excerpt(f"==== streams up {self.run_id} ")

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self._http_port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://{LOOPBACK}:{self._http_port}/health/ready"

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
            smtp_address=f"{LOOPBACK}:{self._smtp.port}",
            webhook_url=self._receiver.url,
        )

    # --- the demo -------------------------------------------------------------------------

    def _money(self) -> int:
        from streams.demo.money import run_money_demo

        assert self._smtp is not None
        env = stack.worker_env(self.settings, 0, self._smtp.port, self.secret)
        return run_money_demo(
            self.settings, env, self._smtp, self.log_dir / "worker-money.log", self.run_id,
            self.say, loglevel=self.options.worker_loglevel, timeout_s=self.options.timeout_s,
            api_url=self._api.url if self._api is not None else None,
        )  # fmt: skip

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
            settled = v.settled(view)
            if settled or tick - drawn_at >= TICK_S:
                self._draw(view)
                drawn_at = tick
            if settled or view.elapsed_s > self.options.timeout_s:
                break
            self._check_worker()
            time.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
        peer_ids = set().union(*self._peers().values())
        problems = v.problems(scenario, view, dead, peer_ids, settled)
        notes = v.count_leftovers(view) if not problems else []
        for line in summary_lines(
            view, settled=settled, problems=problems, notes=notes, where=self._where()
        ):
            self.echo(line)
        notify_ok = self._notify_phase()
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
        return v.exit_code(settled, problems + ([] if notify_ok else ["notifications"]))

    def _notify_phase(self) -> bool:
        """Push consent, quiet hours, an invalid token, a suppressed email (demo/notify.py)."""
        import os

        from streams.demo.notify import DEFAULT_QUIET_HOURS, NotifyDemo
        from streams.publish.publisher import Publisher

        if self._push is None or self._worker is None or self._smtp is None:
            return True
        worker, smtp = self._worker, self._smtp
        demo = NotifyDemo(self.run_id, self._push.provider)
        self.echo("")
        self.echo(click.style("notifications", bold=True) + " (push, consent, suppression)")
        quiet = os.environ.get("STREAMS_PUSH_QUIET_HOURS", DEFAULT_QUIET_HOURS)
        with Publisher(self.settings, producer_name="streams-up") as publisher:
            demo.run(
                lambda t, p: publisher.publish(t, p),
                worker.metric,
                lambda: smtp.transactions,
                quiet,
                timeout_s=min(30.0, self.options.timeout_s),
            )
        for line in demo.lines():
            self.echo(line)
        return all(c.ok for c in demo.checks)

    def _scrape(self) -> m.Snapshot:
        """The worker's metrics now; the last good reading when it does not answer."""
        try:
            self._snapshot = m.scrape(self.metrics_url)
        except (OSError, ValueError):
            self._check_worker()
        return self._snapshot

    def _peers(self) -> dict[str, set[str]]:
        """Event ids each family's peer accepted so far."""
        assert self._smtp is not None and self._receiver is not None
        return {"email": self._smtp.accepted(), "webhook": self._receiver.delivered()}

    def _view(
        self,
        scenario: Scenario,
        baseline: m.Snapshot,
        dead: v.DeadLetters,
        started: float,
    ) -> RunView:
        counts = m.delta(self._scrape(), baseline)
        return v.run_view(scenario, counts, self._peers(), dead, time.monotonic() - started)

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
            changes = v.changes(m.delta(now, last))
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
        if self._api is not None:
            stopped.append(api_stack.stop_api(self._api))
        if self._worker is not None:
            bound_s = self.settings.shutdown_timeout_s + 5.0
            stopped.append(stack.stop_worker(self._worker, bound_s, lambda: self._hurry))
        if self._receiver is not None:
            self._receiver.stop()
            stopped.append("webhook receiver")
        if self._smtp is not None:
            self._smtp.stop()
            stopped.append("SMTP catcher")
        if self._push is not None:
            with contextlib.suppress(Exception):
                self._push.__exit__(None, None, None)
            stopped.append("push provider")
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
