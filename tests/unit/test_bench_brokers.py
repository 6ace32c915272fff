"""The Kafka version a bench run records, read from the broker's own log (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.brokers import logged_kafka_version, streams_broker_version

LOG = """[2026-12-02 18:11:29,619] INFO Kafka version: 4.2.0 (o.a.k.common.utils.AppInfoParser)
[2026-12-02 18:11:30,001] INFO [KafkaRaftServer nodeId=1] Kafka Server started
[2026-12-02 19:11:29,619] INFO Kafka version: 4.3.1 (o.a.k.common.utils.AppInfoParser)
"""


def _broker_state(tmp_path: Path, port: int, log: str | None) -> Path:
    state_dir = tmp_path / "broker"
    state_dir.mkdir()
    log_file = tmp_path / "server.log"
    if log is not None:
        log_file.write_text(log)
    state = {"port": port, "log_file": str(log_file), "kafka_version": "9.9.9"}
    (state_dir / "state.json").write_text(json.dumps(state))
    return state_dir


def test_the_version_is_the_last_one_the_broker_logged(tmp_path: Path) -> None:
    (tmp_path / "server.log").write_text(LOG)

    assert logged_kafka_version(tmp_path / "server.log") == "4.3.1"  # restarted after an upgrade
    assert logged_kafka_version(tmp_path / "missing.log") is None
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert logged_kafka_version(tmp_path / "empty.log") is None


def test_the_checkouts_broker_is_recognised_by_its_port(tmp_path: Path) -> None:
    state_dir = _broker_state(tmp_path, 60063, LOG)

    version, source = streams_broker_version(state_dir, "127.0.0.1:60063") or ("", "")
    assert version == "4.3.1"  # the log, not the state file's pinned figure
    assert "server.log" in source
    assert streams_broker_version(state_dir, "localhost:60063") is not None
    assert streams_broker_version(state_dir, "127.0.0.1:60064") is None  # another broker
    assert streams_broker_version(state_dir, "kafka.example:60063") is None
    assert streams_broker_version(tmp_path / "nowhere", "127.0.0.1:60063") is None


def test_a_broker_without_a_readable_log_records_no_version(tmp_path: Path) -> None:
    assert streams_broker_version(_broker_state(tmp_path, 60063, None), "127.0.0.1:60063") is None
