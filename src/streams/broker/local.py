"""A real single-node Apache Kafka broker (KRaft) run with plain ``java``, no Docker.

``LocalBroker`` assembles the jars with Maven (``broker_jars``), formats a data directory,
starts ``kafka.Kafka`` on 127.0.0.1, waits until a metadata request answers, and stops the
JVM by its own pid. State lives in ``state_dir`` (``<home>/broker`` for the CLI):

- ``pid``: the JVM's pid while it runs;
- ``bootstrap``: ``host:port`` once it answers (``Settings.bootstrap`` reads this file);
- ``state.json``: ports, data dir, log file, Kafka version (kept after a stop so a restart
  reuses the same ports and data).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.broker.config import (
    DEFAULT_HEAP_MB,
    LOOPBACK,
    SASL_SSL_HOST,
    BrokerToolMissing,
    LocalBrokerError,
    format_command,
    free_ports,
    new_cluster_id,
    port_accepts,
    port_is_free,
    render_log4j2_properties,
    render_server_properties,
    server_command,
    tail,
)
from streams.broker.jars import default_pom_path, ensure_jars, read_kafka_version
from streams.broker.liveness import metadata_answers as metadata_answers  # re-exported
from streams.broker.liveness import pid_alive as _pid_alive
from streams.broker.liveness import wait_ready as _wait_ready
from streams.broker.tls import SCRAM_USER, SaslSslListener, make_local_tls, scram_password
from streams.settings import Settings
from streams.testing.processes import die_with_parent

__all__ = ["BrokerStatus", "BrokerToolMissing", "LocalBroker", "LocalBrokerError"]

DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 30.0
_FORMAT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class BrokerStatus:
    """What is known about a local broker; ``answering`` = its port accepts connections."""

    running: bool
    pid: int | None = None
    bootstrap: str | None = None
    data_dir: Path | None = None
    log_file: Path | None = None
    answering: bool = False
    sasl_ssl: SaslSslListener | None = None


class LocalBroker:
    """One local broker bound to ``state_dir``; see the module docstring for the files."""

    def __init__(
        self,
        state_dir: Path,
        *,
        cache_dir: Path,
        data_dir: Path | None = None,
        pom: Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        heap_mb: int = DEFAULT_HEAP_MB,
        die_with_parent: bool = False,
        progress: Callable[[str], None] | None = None,
        sasl_ssl: bool = False,
        proxied: tuple[int, int] | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.cache_dir = cache_dir.resolve()
        self.data_dir = (data_dir or self.state_dir / "data").resolve()
        self.pom = (pom or default_pom_path()).resolve()
        self.port = port
        self.controller_port = controller_port
        self.heap_mb = heap_mb
        self.die_with_parent = die_with_parent
        self._progress = progress
        self._proc: subprocess.Popen[bytes] | None = None
        self.sasl_ssl = sasl_ssl  # a SASL_SSL (SCRAM-SHA-512) listener besides PLAINTEXT
        self.proxied = proxied  # (listen, advertised) port of a listener behind a TCP proxy

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LocalBroker:
        """The broker of ``settings.home``: state in ``broker/``, jars in ``broker-cache/``."""
        return cls(settings.home / "broker", cache_dir=settings.home / "broker-cache", **kwargs)

    # --- paths ----------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        """The broker's log4j log (``server.log``)."""
        return self.data_dir / "logs" / "server.log"

    @property
    def jvm_output(self) -> Path:
        """The JVM's stdout/stderr (crashes before log4j is up land here)."""
        return self.data_dir / "logs" / "jvm.out"

    def _state_file(self, name: str) -> Path:
        return self.state_dir / name

    # --- status ---------------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        """The current state; a pid file of a dead process is removed on the way."""
        pid = self._read_pid()
        if pid is None:
            return BrokerStatus(running=False, data_dir=self.data_dir, log_file=self.log_file)
        if not self._is_our_process(pid):
            self._clear_running_state()
            return BrokerStatus(running=False, data_dir=self.data_dir, log_file=self.log_file)
        bootstrap = self._read_text("bootstrap")
        state = self._read_state()
        port = state.get("port")
        answering = isinstance(port, int) and port_accepts(LOOPBACK, port, timeout_s=1.0)
        return BrokerStatus(
            True, pid, bootstrap, self.data_dir, self.log_file, answering, self._listener(state)
        )

    def _listener(self, state: dict[str, Any]) -> SaslSslListener | None:
        port = state.get("sasl_ssl_port")
        if not isinstance(port, int):
            return None
        return SaslSslListener(
            bootstrap=f"{SASL_SSL_HOST}:{port}",
            ca_file=self.data_dir / "tls" / "ca.crt",
            username=SCRAM_USER,
            password=scram_password(self.state_dir),
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker log and of the JVM output."""
        parts = []
        for path in (self.log_file, self.jvm_output):
            with contextlib.suppress(OSError):
                text = path.read_text(encoding="utf-8", errors="replace")
                if text.strip():
                    parts.append(f"--- {path} ---\n{tail(text, lines)}")
        return "\n".join(parts) or "(the broker wrote no log)"

    # --- start ----------------------------------------------------------------------------

    def start(
        self, timeout_s: float = DEFAULT_START_TIMEOUT_S, *, fresh: bool = False
    ) -> BrokerStatus:
        """Start the broker (or return the running one) and wait until metadata answers.

        ``timeout_s`` bounds the wait for readiness after the jars are assembled. ``fresh``
        wipes the data dir first. Raises BrokerToolMissing without java/mvn and
        LocalBrokerError (with the tail of the broker log) when it does not come up.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            current = self.status()
            if current.running:
                return current
            java = shutil.which("java")
            if java is None:
                raise BrokerToolMissing("java")
            lib_dir = ensure_jars(self.cache_dir, self.pom, progress=self._progress)
            if fresh:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            port, controller_port = self._choose_ports()
            sasl_port = self._sasl_port(port, controller_port)
            self._write_configs(port, controller_port, sasl_port)
            self._format(java, lib_dir)
            self._say(f"starting Kafka on {LOOPBACK}:{port} (data {self.data_dir})")
            proc = self._spawn(java, lib_dir)
            self._write_state(
                port=port, controller_port=controller_port, pid=proc.pid, sasl_ssl_port=sasl_port
            )
            bootstrap = f"{LOOPBACK}:{port}"
            try:
                _wait_ready(proc, bootstrap, port, timeout_s, self.log_tail)
            except BaseException:
                self._terminate(proc.pid, DEFAULT_STOP_TIMEOUT_S)
                self._clear_running_state()
                raise
            self._write_text("bootstrap", bootstrap + "\n")
            listener = self._listener(self._read_state())
            return BrokerStatus(
                True, proc.pid, bootstrap, self.data_dir, self.log_file, True, listener
            )

    def _sasl_port(self, port: int, controller_port: int) -> int | None:
        if not self.sasl_ssl:
            return None
        old = self._read_state().get("sasl_ssl_port")
        if isinstance(old, int) and old not in (port, controller_port) and port_is_free(old):
            return old
        return next(p for p in free_ports(3) if p not in (port, controller_port))

    def _choose_ports(self) -> tuple[int, int]:
        previous = self._read_state()
        wanted = [self.port, self.controller_port]
        for index, name in enumerate(("port", "controller_port")):
            if wanted[index] is not None:
                if not port_is_free(wanted[index] or 0):
                    raise LocalBrokerError(f"{name} {wanted[index]} on {LOOPBACK} is in use")
                continue
            old = previous.get(name)
            if isinstance(old, int) and old not in wanted and port_is_free(old):
                wanted[index] = old  # a restart keeps its address
        spare = iter(p for p in free_ports(4) if p not in wanted)
        port = wanted[0] if wanted[0] is not None else next(spare)
        controller_port = wanted[1] if wanted[1] is not None else next(spare)
        if port == controller_port:
            raise LocalBrokerError(f"port and controller_port must differ, both are {port}")
        return port, controller_port

    def _write_configs(self, port: int, controller_port: int, sasl_port: int | None) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        kraft_dir = self.data_dir / "kraft"
        server_pem = None
        if sasl_port is not None:
            tls_dir = self.data_dir / "tls"
            server_pem = tls_dir / "server.pem"
            if not server_pem.exists():
                self._say("making a local CA and a certificate for localhost (SASL_SSL)")
                make_local_tls(tls_dir, (SASL_SSL_HOST, LOOPBACK))
        self.config_path.write_text(
            render_server_properties(
                port=port,
                controller_port=controller_port,
                log_dir=kraft_dir,
                sasl_ssl_port=sasl_port,
                server_pem=server_pem,
                proxied=self.proxied,
            )
        )
        (self.data_dir / "log4j2.properties").write_text(render_log4j2_properties(self.log_file))

    def _format(self, java: str, lib_dir: Path) -> None:
        if (self.data_dir / "kraft" / "meta.properties").exists():
            return
        self._say("formatting the KRaft data directory")
        users = {SCRAM_USER: scram_password(self.state_dir)} if self.sasl_ssl else None
        argv = format_command(java, lib_dir, self.config_path, new_cluster_id(), scram_users=users)
        try:
            done = subprocess.run(
                argv,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalBrokerError(
                f"formatting {self.data_dir} took over {_FORMAT_TIMEOUT_S:g}s"
            ) from exc
        if done.returncode != 0:
            raise LocalBrokerError(
                f"formatting the broker data dir failed (exit {done.returncode}):\n"
                f"{tail(done.stdout + done.stderr)}"
            )

    def _spawn(self, java: str, lib_dir: Path) -> subprocess.Popen[bytes]:
        argv = server_command(
            java,
            lib_dir,
            self.config_path,
            self.data_dir / "log4j2.properties",
            self.log_file.parent,
            self.heap_mb,
        )
        with self.jvm_output.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the shell that started it does not stop it
                preexec_fn=die_with_parent if self.die_with_parent else None,
            )
        self._proc = proc
        return proc

    # --- stop -----------------------------------------------------------------------------

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S, *, crash: bool = False) -> bool:
        """SIGTERM the broker, SIGKILL after ``timeout_s``; False when it was not running.

        ``crash``: SIGKILL at once, no clean shutdown (fault tests); data and ports are
        kept, so ``start`` brings it back at the same address."""
        with self._lock():
            pid = self._read_pid()
            running = pid is not None and self._is_our_process(pid)
            if running and pid is not None:
                self._say(f"stopping the local broker (pid {pid})")
                first = signal.SIGKILL if crash else signal.SIGTERM
                self._terminate(pid, timeout_s, first=first)
            self._clear_running_state()
            return running

    def _terminate(self, pid: int, timeout_s: float, first: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first)
        if self._wait_exit(pid, timeout_s):
            return
        self._say(f"the broker did not stop within {timeout_s:g}s: sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not self._wait_exit(pid, 10.0):
            raise LocalBrokerError(f"the broker (pid {pid}) survived SIGKILL")

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    # --- state files ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._state_file(".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _is_our_process(self, pid: int) -> bool:
        if not _pid_alive(pid):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if not cmdline.exists():
            return True  # no /proc: trust the pid file
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            return str(self.config_path).encode() in args  # guards against a reused pid
        return False

    def _read_pid(self) -> int | None:
        text = self._read_text("pid")
        return int(text) if text and text.isdigit() else None

    def _read_text(self, name: str) -> str | None:
        try:
            return self._state_file(name).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def _write_text(self, name: str, text: str) -> None:
        path = self._state_file(name)
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)

    def _read_state(self) -> dict[str, Any]:
        text = self._read_text("state.json")
        with contextlib.suppress(ValueError):
            data = json.loads(text or "{}")
            if isinstance(data, dict):
                return data
        return {}

    def _write_state(
        self, *, port: int, controller_port: int, pid: int, sasl_ssl_port: int | None
    ) -> None:
        state = {
            "port": port,
            "controller_port": controller_port,
            "sasl_ssl_port": sasl_ssl_port,
            "data_dir": str(self.data_dir),
            "log_file": str(self.log_file),
            "kafka_version": read_kafka_version(self.pom),
        }
        self._write_text("state.json", json.dumps(state, indent=2) + "\n")
        self._write_text("pid", f"{pid}\n")

    def _clear_running_state(self) -> None:
        for name in ("pid", "bootstrap"):
            self._state_file(name).unlink(missing_ok=True)

    def _say(self, message: str) -> None:
        if self._progress:
            self._progress(message)
