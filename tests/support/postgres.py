"""A real PostgreSQL server for the test session, started by the fixture itself.

Debian's ``postgresql-NN`` package installs the server binaries off PATH
(``/usr/lib/postgresql/NN/bin``); ``initdb`` refuses to run as root, so as root the
server runs as the ``postgres`` user (``runuser -u postgres``) in a temp dir it owns, on
a free TCP port of 127.0.0.1 with its unix socket in that dir, trust authentication for
the ``streams`` superuser. It is stopped at the end by the pid in ``postmaster.pid``.
Without the binaries the fixture fails and says what to install: it never skips.

Fixtures (import them into a test module):
- ``postgres_server``: the session's server;
- ``store_url``: parametrized over ``sqlite`` (a file in the test's tmp dir) and
  ``postgresql`` (a fresh database on the session server), as a plain SQLAlchemy URL.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUPERUSER = "streams"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, postgres) not found: install them, e.g. "
    "`apt-get install -y postgresql` on Debian (they land in /usr/lib/postgresql/NN/bin), "
    "or set STREAMS_TEST_PG_BINDIR to a directory holding initdb and postgres"
)


def find_bindir() -> Path | None:
    """The newest PostgreSQL server bin directory (env override, Debian layout, PATH)."""
    configured = os.environ.get("STREAMS_TEST_PG_BINDIR")
    candidates = [configured] if configured else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One PostgreSQL server in its own directory. ``durable=False`` turns fsync off (tests
    kill workers, never this server); benchmarks keep the defaults."""

    bindir: Path
    durable: bool = False
    port: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="streams-pg-")))
    pid: int | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, argv: list[str], what: str) -> None:
        done = subprocess.run(self._as_owner(argv), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            "initdb",
        )
        self.port = _free_port()
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.root / "server.log"),
                "-o",
                f"-p {self.port} " + " ".join(options),
                "-w",
                "-t",
                str(int(START_TIMEOUT_S)),
                "start",
            ],
            f"pg_ctl start (log {self.root / 'server.log'})",
        )
        self.pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` through psql (unix socket); returns its unaligned output."""
        done = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown by pid (SIGINT), SIGKILL past ``STOP_TIMEOUT_S``; removes the dir."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)
                deadline = time.monotonic() + STOP_TIMEOUT_S
                while time.monotonic() < deadline and _alive(self.pid):
                    time.sleep(0.1)
                if _alive(self.pid):
                    os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours would still answer: the server is pg_ctl's child, not ours
    return True


def start_server(durable: bool = False) -> PostgresServer:
    """A started server; raises RuntimeError with ``INSTALL_HINT`` without the binaries."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(INSTALL_HINT)
    server = PostgresServer(bindir, durable=durable)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (fails, naming the package, without the binaries)."""
    try:
        server = start_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: a SQLite file, or a new database on the PG server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
