"""The broker a bench run measures, and the Kafka version it records.

``STREAMS_KAFKA_BOOTSTRAP`` when set, else a ``LocalBroker`` started (and stopped) by the run
in a temp directory, as the test suite does. The version recorded is the one the broker
logged at start-up (``Kafka version: 4.3.1`` in its server.log) when that log is known: a
broker the bench started, or this checkout's ``streams broker start`` broker (the bootstrap
port is the one in ``.streams/broker/state.json``); ``--broker-version`` for any other
cluster; else the version pinned in ``broker/pom.xml``, marked as not verified.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BROKER_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class BrokerInfo:
    bootstrap: str
    version: str
    version_source: str
    started_here: bool


@contextlib.contextmanager
def broker(version_override: str | None) -> Iterator[BrokerInfo]:
    """STREAMS_KAFKA_BOOTSTRAP when set, else a LocalBroker started (and stopped) here."""
    from streams.broker.jars import default_pom_path, read_kafka_version
    from streams.settings import Settings

    pinned = read_kafka_version(default_pom_path())
    configured = os.environ.get("STREAMS_KAFKA_BOOTSTRAP", "").strip()
    if configured:
        logged = streams_broker_version(Settings().home / "broker", configured)
        if version_override:
            yield BrokerInfo(configured, version_override, "--broker-version", False)
        elif logged:
            yield BrokerInfo(configured, logged[0], logged[1], False)
        else:
            yield BrokerInfo(
                configured, pinned, "broker/pom.xml (not verified on this cluster)", False
            )
        return
    from streams.broker.local import LocalBroker

    print("STREAMS_KAFKA_BOOTSTRAP is not set: starting a local broker ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="streams-bench-broker-") as tmp:
        local = LocalBroker(
            Path(tmp), cache_dir=Settings().home / "broker-cache", die_with_parent=True
        )
        status = local.start(timeout_s=BROKER_START_TIMEOUT_S)
        try:
            assert status.bootstrap is not None
            logged_version = logged_kafka_version(local.log_file)
            yield BrokerInfo(
                status.bootstrap,
                logged_version or pinned,
                f"local broker ({'its server.log' if logged_version else 'broker/pom.xml'})",
                True,
            )
        finally:
            local.stop()


def logged_kafka_version(log_file: Path) -> str | None:
    """The version a Kafka broker logged at start-up ("Kafka version: 4.3.1"), newest last."""
    try:
        found = re.findall(r"Kafka version: (\S+)", log_file.read_text(errors="replace"))
    except OSError:
        return None
    return found[-1] if found else None


def streams_broker_version(state_dir: Path, bootstrap: str) -> tuple[str, str] | None:
    """(version, source) when ``bootstrap`` is the ``streams broker start`` broker of this
    checkout (same port in its state.json): the version from its server.log."""
    try:
        state = json.loads((state_dir / "state.json").read_text())
        host, _, port = bootstrap.split(",")[0].rpartition(":")
        if host not in ("127.0.0.1", "localhost") or int(port) != int(state["port"]):
            return None
        version = logged_kafka_version(Path(state["log_file"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (version, f"server.log of the streams broker ({state_dir})") if version else None
