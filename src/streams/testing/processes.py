"""The one harness for the processes a local run starts: ``streams up``, the tests, bench.

It lives in ``streams.testing`` beside the real SMTP and webhook peers because, like them,
it serves local runs (the demo, the local broker), the test suite and the benchmarks, never
a production worker. What it knows:

- ports: ``free_ports`` / ``free_port`` (bound a moment ago, so free now) and ``port_free``
  (may a fixed port be used?);
- catalogs: ``write_catalog`` reduces the checkout's topics.yaml to the families a run
  provisions, with their entries overridden;
- processes: ``ManagedProcess`` starts a command with its environment, appends its output
  to a log file (optionally after a header line naming the run), can give it its own
  session (a Ctrl-C in the terminal then reaches only the parent, which stops it in order)
  and ``die_with_parent`` (the kernel sends SIGTERM should the parent die first: Linux's
  ``PR_SET_PDEATHSIG``), waits for its HTTP readiness probe, and stops it with SIGTERM and
  a bounded wait before SIGKILL;
- workers: ``WorkerProcess`` is a ``ManagedProcess`` running ``streams worker`` with an
  HTTP port, reading its ``/health`` and ``/metrics``; ``worker_env`` turns ``Settings``
  into the environment such a worker reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.settings import Settings

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# topics.yaml of the source checkout this module runs from (tests and bench run from one)
CHECKOUT_CATALOG = Path(__file__).resolve().parents[3] / "topics.yaml"


# --- ports -------------------------------------------------------------------------------


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOOPBACK) -> int:
    """One TCP port that was free on ``host`` a moment ago."""
    return free_ports(1, host)[0]


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``port`` can be bound on ``host`` now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --- catalogs ----------------------------------------------------------------------------


def write_catalog(
    directory: Path,
    families: Mapping[str, Mapping[str, Any]],
    *,
    source: Path = CHECKOUT_CATALOG,
) -> Path:
    """``directory``/topics.yaml: ``source`` reduced to the families in ``families``, each
    entry updated (one level deep) with its overrides, so a run provisions only the topics
    it uses. Raises ``CatalogError`` here, clearly, when an override is invalid."""
    import yaml

    from streams.catalog import parse_catalog

    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    data["families"] = {name: {**data["families"][name], **body} for name, body in families.items()}
    path = directory / "topics.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    parse_catalog(data, path)
    return path


# --- HTTP probes -------------------------------------------------------------------------


def http_json(url: str, timeout_s: float = 2.0) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of a GET; an error status keeps its body ({} when it is
    not JSON). Raises ``OSError`` when nothing answers, ``ValueError`` on a bad 2xx body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), json.loads(exc.read() or b"{}")
        except ValueError:
            return int(exc.code), {}


def probe(url: str, timeout_s: float = 2.0) -> tuple[int, dict[str, Any]]:
    """``http_json``, with (0, {}) when nothing (or nothing readable) answers."""
    try:
        return http_json(url, timeout_s)
    except (OSError, ValueError):
        return 0, {}


# --- processes ---------------------------------------------------------------------------


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """In the child before exec: get SIGTERM when the starting process dies (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class NotReady(Exception):
    """A process did not become ready: it exited (``exit_code``) or the wait ran out."""

    def __init__(self, exit_code: int | None, last: str, waited_s: float) -> None:
        super().__init__(
            f"exited with code {exit_code}"
            if exit_code is not None
            else f"not ready within {waited_s:g}s ({last})"
        )
        self.exit_code = exit_code
        self.last = last  # what the probe said last ("no answer", "HTTP 503 {...}")
        self.waited_s = waited_s


@dataclass(frozen=True)
class Stopped:
    """How a stop went: ``killed`` = SIGKILL was needed; ``had_exited`` = it was gone."""

    returncode: int | None
    killed: bool
    had_exited: bool
    elapsed_s: float


@dataclass
class ManagedProcess:
    """One subprocess: command, complete environment, output appended to ``log_path``."""

    cmd: list[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path | None = None
    own_session: bool = False  # start_new_session; signals then go to its process group
    die_with_parent: bool = False
    log_header: str | None = None  # "==== <header> <time>: <cmd>" written before the start
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            if self.log_header is not None:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                line = f"\n==== {self.log_header} {stamp}: {' '.join(self.cmd)}\n"
                log.write(line.encode())
                log.flush()
            self.proc = subprocess.Popen(
                self.cmd,
                env=dict(self.env),
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
                preexec_fn=die_with_parent if self.die_with_parent else None,
            )
        return self.proc

    @property
    def started(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError(f"not started: {' '.join(self.cmd)}")
        return self.proc

    def poll(self) -> int | None:
        return self.started.poll()

    def signal(self, sig: int) -> None:
        """Send ``sig`` (to the whole group when the process has its own session)."""
        proc = self.started
        if not self.own_session:
            proc.send_signal(sig)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def wait(self, timeout_s: float) -> int:
        return self.started.wait(timeout_s)

    def wait_ready(self, url: str, *, timeout_s: float, interval_s: float) -> float:
        """Poll ``url`` until it answers 200; the seconds that took. Raises ``NotReady``
        when the process exits first or ``timeout_s`` passes."""
        started = time.monotonic()
        last = "no answer"
        while True:
            code = self.poll()
            if code is not None:
                raise NotReady(code, last, time.monotonic() - started)
            status, body = probe(url)
            if status == 200:
                return time.monotonic() - started
            if status:
                last = f"HTTP {status} {json.dumps(body.get('checks', body))}"
            if time.monotonic() - started > timeout_s:
                raise NotReady(None, last, timeout_s)
            time.sleep(interval_s)

    def stop(
        self,
        bound_s: float,
        *,
        hurry: Callable[[], bool] = lambda: False,
        poll_s: float = 0.1,
        kill_wait_s: float = 10.0,
    ) -> Stopped:
        """SIGTERM, then SIGKILL after ``bound_s`` or as soon as ``hurry()`` says so."""
        proc = self.started
        if proc.poll() is not None:
            return Stopped(proc.returncode, killed=False, had_exited=True, elapsed_s=0.0)
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        killed = False
        while proc.poll() is None:
            if hurry() or time.monotonic() - started > bound_s:
                self.signal(signal.SIGKILL)
                killed = True
                proc.wait(kill_wait_s)
                break
            time.sleep(poll_s)
        return Stopped(proc.returncode, killed, False, time.monotonic() - started)

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` of the log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def failure_excerpt(self, since_marker: str, lines: int = 20) -> str:
        """The part of the log that explains a crash: from the first ERROR/CRITICAL line
        after ``since_marker`` (the header of this run), else the last lines; indented."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "    (no log)"
        start = text.rfind(since_marker)
        run = (text[start:] if start >= 0 else text).splitlines()
        first = next(
            (i for i, line in enumerate(run) if "[ERROR]" in line or "[CRITICAL]" in line), None
        )
        chosen = run[first : first + lines] if first is not None else run[-lines:]
        return "\n".join("    " + line for line in chosen)


# --- workers -----------------------------------------------------------------------------


def worker_command(
    families: Sequence[str],
    *,
    handlers: str | None = None,
    loglevel: str = "info",
    python_args: Sequence[str] = (),
    builtin_jobs: bool = True,
) -> list[str]:
    """``python [python_args] -m streams worker [--handlers H] [--no-builtin-jobs]
    --family F... --loglevel L``."""
    cmd = [sys.executable, *python_args, "-m", "streams", "worker"]
    if handlers is not None:
        cmd += ["--handlers", handlers]
    if not builtin_jobs:
        cmd.append("--no-builtin-jobs")
    for name in families:
        cmd += ["--family", name]
    return [*cmd, "--loglevel", loglevel]


def worker_env(
    settings: Settings,
    *,
    http_port: int,
    inherit: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``inherit`` (the caller's choice of its own environment) plus what a worker reads
    from ``settings`` (cluster, names, catalog, home, replication override), its HTTP
    port, and ``extra`` last."""
    env = dict(inherit)
    env.update(
        {
            "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
            "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
            "STREAMS_APP_ID": settings.app_id,
            "STREAMS_CATALOG_PATH": str(settings.catalog_path.resolve()),
            "STREAMS_HOME": str(settings.home.resolve()),
            "STREAMS_HTTP_PORT": str(http_port),
        }
    )
    if settings.replication_factor_override is not None:
        env["STREAMS_REPLICATION_FACTOR_OVERRIDE"] = str(settings.replication_factor_override)
    env.update(extra or {})
    return env


@dataclass
class WorkerProcess(ManagedProcess):
    """A ``streams worker`` subprocess serving health and metrics on ``http_port``."""

    http_port: int = 0
    host: str = LOOPBACK

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.http_port}{path}"

    def health(self, path: str = "/health/ready") -> tuple[int, dict[str, Any]]:
        """(status, body) of a health endpoint; raises ``OSError`` when nothing answers."""
        return http_json(self.url(path))

    def metrics(self) -> str:
        """The Prometheus text of ``/metrics``; raises ``OSError`` when nothing answers."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=2) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        want = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in self.metrics().splitlines():
            if (line.startswith(name + "{") and all(p in line for p in want)) or (
                line.startswith(name + " ") and not labels
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_healthy(self, timeout_s: float, interval_s: float) -> float:
        """``wait_ready`` on ``/health/ready``."""
        return self.wait_ready(
            self.url("/health/ready"), timeout_s=timeout_s, interval_s=interval_s
        )
