"""Pure helpers of the local broker, and its behaviour without java/mvn or with stale state."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker.config import (
    BrokerToolMissing,
    LocalBrokerError,
    format_command,
    free_ports,
    is_valid_cluster_id,
    maven_command,
    new_cluster_id,
    parse_bootstrap,
    parse_kafka_version,
    port_accepts,
    port_is_free,
    render_log4j2_properties,
    render_server_properties,
    server_command,
)
from streams.broker.jars import (
    MARKER,
    default_pom_path,
    ensure_jars,
    is_complete,
    lib_dir_for,
    read_kafka_version,
)
from streams.broker.local import LocalBroker

POM_NS = "http://maven.apache.org/POM/4.0.0"


def _pom(version: str | None, ns: bool = True) -> str:
    props = f"<kafka.version>{version}</kafka.version>" if version is not None else ""
    xmlns = f' xmlns="{POM_NS}"' if ns else ""
    return f"<project{xmlns}><properties>{props}<x>1</x></properties></project>"


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return dict(pairs)


# --- pom version -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pom", "version"),
    [
        (_pom("4.3.1"), "4.3.1"),
        (_pom(" 3.9.1 "), "3.9.1"),
        (_pom("4.0.0-rc1", ns=False), "4.0.0-rc1"),
    ],
)
def test_parse_kafka_version(pom: str, version: str) -> None:
    assert parse_kafka_version(pom) == version


@pytest.mark.parametrize(
    ("pom", "message"),
    [
        (_pom(None), "no <properties><kafka.version>"),
        (_pom(""), "no <properties><kafka.version>"),
        (_pom("latest"), "'latest' is not a version"),
        ("<project><properties>", "not valid XML"),
    ],
)
def test_parse_kafka_version_rejects(pom: str, message: str) -> None:
    with pytest.raises(LocalBrokerError, match=message.replace("(", r"\(")):
        parse_kafka_version(pom)


def test_repository_pom_pins_a_4x_version() -> None:
    version = read_kafka_version(default_pom_path())
    assert version.split(".")[0] == "4"


def test_read_kafka_version_names_a_missing_pom(tmp_path: Path) -> None:
    with pytest.raises(LocalBrokerError, match="cannot read the broker pom"):
        read_kafka_version(tmp_path / "pom.xml")


# --- cluster id ------------------------------------------------------------------------


def test_cluster_ids_are_valid_and_random() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert is_valid_cluster_id(cluster_id), cluster_id
        assert not cluster_id.startswith("-")


@pytest.mark.parametrize(
    "bad",
    ["", "short", "MkU3OEVBNTcwNTJENDM2Qk==", "-kU3OEVBNTcwNTJENDM2Qk", "MkU3OEVBNTcwN+JENDM2Qk"],
)
def test_invalid_cluster_ids(bad: str) -> None:
    assert not is_valid_cluster_id(bad)


# --- server.properties and log4j2 --------------------------------------------------------


def test_server_properties_proxied_listener_advertises_the_proxy(tmp_path: Path) -> None:
    text = render_server_properties(
        port=19092, controller_port=19093, log_dir=tmp_path, proxied=(19094, 19095)
    )
    props = _props(text)
    assert props["listeners"].endswith(",PROXIED://127.0.0.1:19094")
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:19092,PROXIED://127.0.0.1:19095"
    )
    assert props["listener.security.protocol.map"].endswith(",PROXIED:PLAINTEXT")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    with pytest.raises(LocalBrokerError, match="own port"):
        render_server_properties(port=1, controller_port=2, log_dir=tmp_path, proxied=(1, 3))


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    text = render_server_properties(port=19092, controller_port=19093, log_dir=tmp_path / "kraft")
    props = _props(text)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["offsets.topic.num.partitions"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["share.coordinator.state.topic.replication.factor"] == "1"
    assert int(props["log.cleaner.dedupe.buffer.size"]) <= 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("port", "controller_port", "message"),
    [
        (0, 9093, "port must be an integer in 1..65535, got 0"),
        (9092, 70000, "controller_port must be an integer"),
        (9092, 9092, "must differ, both are 9092"),
    ],
)
def test_server_properties_rejects_bad_ports(
    tmp_path: Path, port: int, controller_port: int, message: str
) -> None:
    with pytest.raises(LocalBrokerError, match=message):
        render_server_properties(port=port, controller_port=controller_port, log_dir=tmp_path)


def test_server_properties_needs_an_absolute_log_dir() -> None:
    with pytest.raises(LocalBrokerError, match="absolute path"):
        render_server_properties(port=1, controller_port=2, log_dir=Path("relative"))


def test_log4j2_properties_write_to_the_log_file(tmp_path: Path) -> None:
    text = render_log4j2_properties(tmp_path / "server.log", level="warn")
    assert f"appender.file.fileName = {tmp_path / 'server.log'}" in text
    assert "rootLogger.level = WARN" in text
    with pytest.raises(LocalBrokerError, match="log level"):
        render_log4j2_properties(tmp_path / "x.log", level="LOUD")


# --- command lines -----------------------------------------------------------------------


def test_server_command_uses_a_bounded_heap_and_the_lib_wildcard(tmp_path: Path) -> None:
    argv = server_command(
        "java", tmp_path / "lib", tmp_path / "s.properties", tmp_path / "l.properties", tmp_path
    )
    assert argv[0] == "java"
    assert "-Xmx512m" in argv
    assert argv[argv.index("-cp") + 1] == f"{tmp_path / 'lib'}/*"
    assert f"-Dlog4j2.configurationFile={tmp_path / 'l.properties'}" in argv
    assert argv[-2:] == ["kafka.Kafka", str(tmp_path / "s.properties")]
    with pytest.raises(LocalBrokerError, match="heap_mb must be >= 128"):
        server_command("java", tmp_path, tmp_path, tmp_path, tmp_path, heap_mb=64)


def test_format_command(tmp_path: Path) -> None:
    cluster_id = new_cluster_id()
    argv = format_command("java", tmp_path, tmp_path / "s.properties", cluster_id)
    assert argv[argv.index("-t") + 1] == cluster_id
    assert "kafka.tools.StorageTool" in argv
    assert "--ignore-formatted" in argv
    with pytest.raises(LocalBrokerError, match="invalid cluster id"):
        format_command("java", tmp_path, tmp_path, "nope")


def test_maven_command(tmp_path: Path) -> None:
    argv = maven_command("mvn", tmp_path / "pom.xml", tmp_path / "lib")
    assert argv[:2] == ["mvn", "-B"]
    assert "dependency:copy-dependencies" in argv
    assert f"-DoutputDirectory={tmp_path / 'lib'}" in argv
    assert "-DincludeScope=runtime" in argv


# --- ports and addresses -------------------------------------------------------------------


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    assert all(port_is_free(port) for port in ports)
    with pytest.raises(ValueError, match="count must be >= 1"):
        free_ports(0)


def test_port_in_use_is_not_free_and_accepts() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free(port)
        assert port_accepts("127.0.0.1", port)
    assert not port_accepts("127.0.0.1", port, timeout_s=0.5)


@pytest.mark.parametrize(
    ("text", "expected"), [("127.0.0.1:9092", ("127.0.0.1", 9092)), (" h:1\n", ("h", 1))]
)
def test_parse_bootstrap(text: str, expected: tuple[str, int]) -> None:
    assert parse_bootstrap(text) == expected


@pytest.mark.parametrize("bad", ["", "host", ":9092", "host:", "host:abc", "host:0"])
def test_parse_bootstrap_rejects(bad: str) -> None:
    with pytest.raises(LocalBrokerError):
        parse_bootstrap(bad)


# --- jar cache -----------------------------------------------------------------------------


def test_cache_is_complete_only_with_marker_and_jar(tmp_path: Path) -> None:
    lib = lib_dir_for(tmp_path, "4.3.1")
    assert lib == tmp_path / "kafka-4.3.1" / "lib"
    lib.mkdir(parents=True)
    (lib / "kafka_2.13-4.3.1.jar").write_bytes(b"")
    assert not is_complete(lib, "4.3.1")  # interrupted download: no marker
    (lib.parent / MARKER).write_text("4.3.1\n")
    assert is_complete(lib, "4.3.1")
    assert not is_complete(lib, "4.3.2")


def test_missing_maven_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerToolMissing, match=r"`mvn` was not found.*apt-get install") as info:
        ensure_jars(tmp_path / "cache")
    assert "STREAMS_KAFKA_BOOTSTRAP" in str(info.value)


def test_missing_java_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    broker = LocalBroker(tmp_path / "state", cache_dir=tmp_path / "cache")
    with pytest.raises(BrokerToolMissing, match="`java` was not found") as info:
        broker.start(timeout_s=5)
    assert "openjdk" in str(info.value)
    assert not (tmp_path / "state" / "pid").exists()


# --- stale state -----------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_pid_file_is_cleaned(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "pid").write_text(f"{_dead_pid()}\n")
    (state / "bootstrap").write_text("127.0.0.1:1\n")
    broker = LocalBroker(state, cache_dir=tmp_path / "cache")
    assert not broker.status().running
    assert not (state / "pid").exists()
    assert not (state / "bootstrap").exists()
    assert broker.stop() is False


def test_pid_of_an_unrelated_process_is_not_ours(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            (state / "pid").write_text(f"{other.pid}\n")
            broker = LocalBroker(state, cache_dir=tmp_path / "cache")
            assert not broker.status().running  # a reused pid is not our broker
            assert broker.stop() is False
            assert other.poll() is None  # and stop never signals it
        finally:
            other.kill()
