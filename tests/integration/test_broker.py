"""`streams broker start|status|stop` runs a real second broker in a temporary STREAMS_HOME."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.broker.local import LocalBroker, LocalBrokerError
from streams.settings import Settings

STREAMS = Path(sys.executable).with_name("streams")


def _cli(home: Path, *args: str, timeout_s: float = 150.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env["STREAMS_HOME"] = str(home)
    return subprocess.run(
        [str(STREAMS), "broker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] != "Z"


def _produce(bootstrap: str, topic: str) -> KafkaError | None:
    """Produce one record with auto-creation allowed on the client; the delivery error."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "allow.auto.create.topics": True,
            "message.timeout.ms": 3000,
            "log_level": 0,
        }
    )
    outcome: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        outcome.append(err)

    producer.produce(topic, key=b"k", value=b"v", on_delivery=on_delivery)
    producer.flush(10.0)
    assert len(outcome) == 1, "no delivery report within 10 s"
    return outcome[0]


@pytest.mark.kafka
def test_cli_starts_checks_and_stops_a_local_broker(tmp_path: Path) -> None:
    assert STREAMS.exists(), f"console script missing: {STREAMS}"
    home = tmp_path / "home"
    home.mkdir()
    shared_cache = Settings().home / "broker-cache"  # reuse the jars, don't download again
    shared_cache.mkdir(parents=True, exist_ok=True)
    (home / "broker-cache").symlink_to(shared_cache, target_is_directory=True)

    started = _cli(home, "start", "--timeout-s", "90")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        bootstrap = started.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", bootstrap), started.stdout
        assert (home / "broker" / "bootstrap").read_text().strip() == bootstrap
        pid = int((home / "broker" / "pid").read_text())
        assert _pid_alive(pid)

        status = _cli(home, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.strip().splitlines()[-1] == bootstrap

        again = _cli(home, "start")
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert again.stdout.strip().splitlines()[-1] == bootstrap

        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        metadata = admin.list_topics(timeout=10)
        host, port = bootstrap.rsplit(":", 1)
        assert [(str(b.host), b.port) for b in metadata.brokers.values()] == [(host, int(port))]

        existing = f"t{uuid.uuid4().hex[:8]}.present"
        admin.create_topics([NewTopic(existing, 1, 1)])[existing].result(timeout=15)
        assert _produce(bootstrap, existing) is None  # the producer itself works

        missing = f"t{uuid.uuid4().hex[:8]}.missing"
        error = _produce(bootstrap, missing)
        assert error is not None, "producing to a missing topic succeeded: auto-create is on"
        assert missing not in admin.list_topics(timeout=10).topics
    finally:
        stopped = _cli(home, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped" in stopped.stdout
    assert not _pid_alive(pid)

    after = _cli(home, "status")
    assert after.returncode == 1
    assert "not running" in after.stdout
    assert not (home / "broker" / "bootstrap").exists()


def test_session_fixture_gives_a_working_broker_and_unique_names(
    settings: Settings, kafka_bootstrap: str, topic_prefix: str, app_id: str
) -> None:
    assert settings.bootstrap == kafka_bootstrap
    assert settings.topic_prefix == topic_prefix
    assert re.fullmatch(r"t[0-9a-f]{8}\.", topic_prefix)
    assert settings.app_id == app_id
    assert app_id.startswith("test-test-session-fixture")
    assert settings.replication_factor_override == 1
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert metadata.brokers, "the session broker answered without brokers"


def test_a_broker_that_dies_while_starting_reports_its_log(tmp_path: Path) -> None:
    kraft = tmp_path / "state" / "data" / "kraft"
    kraft.mkdir(parents=True)
    (kraft / "meta.properties").write_text(  # a directory.id that is not a Uuid: Kafka exits
        "version=1\nnode.id=1\ncluster.id=MkU3OEVBNTcwNTJENDM2Qk\ndirectory.id=xxxxx\n"
    )
    broker = LocalBroker(tmp_path / "state", cache_dir=Settings().home / "broker-cache")
    try:
        with pytest.raises(LocalBrokerError, match=r"exited with code \d+ while starting") as info:
            broker.start(timeout_s=60)
    finally:
        broker.stop()  # never leave a broker behind, even if it unexpectedly started
    assert "server.log" in str(info.value)  # the tail of the broker log is in the message
    assert "meta.properties" in str(info.value)
    assert not broker.status().running
    assert not (tmp_path / "state" / "pid").exists()
