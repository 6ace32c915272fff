"""Is the local broker's JVM alive, and does it answer? (used by ``streams.broker.local``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from streams.broker.config import LOOPBACK, LocalBrokerError, port_accepts


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def metadata_answers(bootstrap: str, timeout_s: float) -> bool:
    """True when an AdminClient metadata request to ``bootstrap`` answers within ``timeout_s``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def wait_ready(
    proc: subprocess.Popen[bytes],
    bootstrap: str,
    port: int,
    timeout_s: float,
    log_tail: Callable[[], str],
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise LocalBrokerError(
                f"the broker JVM exited with code {code} while starting (a damaged data dir "
                f"can be wiped with `streams broker start --fresh`); log tail:\n{log_tail()}"
            )
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise LocalBrokerError(
                f"the broker did not answer on {bootstrap} within {timeout_s:g}s; "
                f"log tail:\n{log_tail()}"
            )
        if port_accepts(LOOPBACK, port, timeout_s=0.5) and metadata_answers(
            bootstrap, timeout_s=max(0.5, min(5.0, remaining_s))
        ):
            return
        time.sleep(0.2)
