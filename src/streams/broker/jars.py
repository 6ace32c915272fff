"""The local broker's classpath: Maven copies the jars named by ``broker/pom.xml`` into a cache.

Layout: ``<cache_dir>/kafka-<version>/lib/*.jar`` plus a ``.complete`` marker written only
after Maven succeeded, so an interrupted download is redone on the next start. A file lock
lets concurrent starters (the CLI, test sessions) share one cache safely.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from streams.broker.config import (
    BrokerToolMissing,
    LocalBrokerError,
    maven_command,
    parse_kafka_version,
    tail,
)

_REPO_ROOT = Path(__file__).resolve().parents[3]
MARKER = ".complete"
DEFAULT_MAVEN_TIMEOUT_S = 1200.0


def default_pom_path() -> Path:
    """``broker/pom.xml`` in the working directory if present, else in the source checkout."""
    local = Path.cwd() / "broker" / "pom.xml"
    return local if local.exists() else _REPO_ROOT / "broker" / "pom.xml"


def read_kafka_version(pom: Path) -> str:
    """The pinned Kafka version of ``pom``; raises LocalBrokerError when it is missing."""
    try:
        text = pom.read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalBrokerError(f"cannot read the broker pom {pom}: {exc}") from exc
    return parse_kafka_version(text)


def lib_dir_for(cache_dir: Path, version: str) -> Path:
    """Where the jars of Kafka ``version`` live inside ``cache_dir``."""
    return cache_dir / f"kafka-{version}" / "lib"


def pom_digest(pom: Path) -> str:
    """A short digest of the pom: a changed dependency (log4j, kafka-tools) re-assembles."""
    return hashlib.sha256(pom.read_bytes()).hexdigest()[:16]


def is_complete(lib_dir: Path, version: str, digest: str = "") -> bool:
    """True when a finished assembly of ``version`` (from a pom with ``digest``) is in
    ``lib_dir``."""
    marker = lib_dir.parent / MARKER
    return (
        marker.is_file()
        and marker.read_text(encoding="utf-8").strip() == f"{version} {digest}".strip()
        and (lib_dir / f"kafka_2.13-{version}.jar").is_file()
    )


def ensure_jars(
    cache_dir: Path,
    pom: Path | None = None,
    *,
    timeout_s: float = DEFAULT_MAVEN_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The lib directory of the pom's Kafka version, assembling it with Maven when needed.

    Raises BrokerToolMissing without ``mvn``, LocalBrokerError when Maven fails or exceeds
    ``timeout_s`` (seconds).
    """
    pom = (pom or default_pom_path()).resolve()
    version = read_kafka_version(pom)
    lib_dir = lib_dir_for(cache_dir.resolve(), version)
    digest = pom_digest(pom)
    if is_complete(lib_dir, version, digest):
        return lib_dir
    lib_dir.parent.mkdir(parents=True, exist_ok=True)
    with (lib_dir.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be assembling the same cache
        if not is_complete(lib_dir, version, digest):
            _assemble(pom, lib_dir, version, timeout_s, progress)
            (lib_dir.parent / MARKER).write_text(f"{version} {digest}\n", encoding="utf-8")
    return lib_dir


def _assemble(
    pom: Path,
    lib_dir: Path,
    version: str,
    timeout_s: float,
    progress: Callable[[str], None] | None,
) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerToolMissing("mvn")
    (lib_dir.parent / MARKER).unlink(missing_ok=True)
    shutil.rmtree(lib_dir, ignore_errors=True)
    if progress:
        progress(f"assembling Kafka {version} jars with Maven into {lib_dir} (first run only)")
    started = time.monotonic()
    try:
        done = subprocess.run(
            maven_command(mvn, pom, lib_dir),
            cwd=pom.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalBrokerError(
            f"Maven did not finish assembling Kafka {version} within {timeout_s:g}s"
        ) from exc
    if done.returncode != 0:
        output = tail(done.stdout + done.stderr)
        raise LocalBrokerError(
            f"Maven failed (exit {done.returncode}) assembling Kafka {version} from {pom}:\n"
            f"{output}"
        )
    if not (lib_dir / f"kafka_2.13-{version}.jar").is_file():
        raise LocalBrokerError(f"Maven succeeded but {lib_dir} has no kafka_2.13-{version}.jar")
    if progress:
        jars = len(list(lib_dir.glob("*.jar")))
        progress(f"assembled {jars} jars in {time.monotonic() - started:.1f}s")
