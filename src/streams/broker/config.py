"""Pure helpers of the local broker: config rendering, cluster id, pom version, ports, argv.

Nothing here starts a process; ``streams.broker.local`` does the IO. See
``shared/design/kafka-broker.md`` for where each property comes from.
"""

from __future__ import annotations

import base64
import re
import socket
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from streams.errors import StreamsError
from streams.testing.processes import free_ports as free_ports  # the one copy: the harness

KAFKA_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
LOOPBACK = "127.0.0.1"
DEFAULT_HEAP_MB = 512
FORMAT_HEAP_MB = 256

_POM_NS = "{http://maven.apache.org/POM/4.0.0}"
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+([.-][A-Za-z0-9.-]+)?$")
_CLUSTER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
_MISSING_TOOL_HINT = (
    "install it (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless maven`), "
    "or set STREAMS_KAFKA_BOOTSTRAP=host:port to use an existing Kafka cluster"
)


class LocalBrokerError(StreamsError):
    """The local broker could not be assembled, started, or stopped; the message says why."""


class BrokerToolMissing(LocalBrokerError):
    """``java`` or ``mvn`` is not on PATH."""

    def __init__(self, tool: str) -> None:
        super().__init__(f"`{tool}` was not found on PATH: {_MISSING_TOOL_HINT}")
        self.tool = tool


def parse_kafka_version(pom_xml: str) -> str:
    """The ``kafka.version`` property of the broker pom; raises LocalBrokerError if absent/bad."""
    try:
        root = ET.fromstring(pom_xml)
    except ET.ParseError as exc:
        raise LocalBrokerError(f"broker pom is not valid XML: {exc}") from exc
    node = root.find(f"{_POM_NS}properties/{_POM_NS}kafka.version")
    if node is None:
        node = root.find("properties/kafka.version")  # a pom without the Maven namespace
    if node is None or not (node.text or "").strip():
        raise LocalBrokerError("broker pom has no <properties><kafka.version> element")
    version = (node.text or "").strip()
    if not _VERSION_RE.match(version):
        raise LocalBrokerError(f"broker pom: kafka.version {version!r} is not a version")
    return version


def new_cluster_id() -> str:
    """A random KRaft cluster id: 22 characters of URL-safe base64 (like ``Uuid.randomUuid``)."""
    while True:
        raw = uuid.uuid4().bytes
        cluster_id = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):  # Kafka avoids ids a CLI would read as a flag
            return cluster_id


def is_valid_cluster_id(cluster_id: str) -> bool:
    """True for a 22-character URL-safe base64 id that does not start with ``-``."""
    return bool(_CLUSTER_ID_RE.match(cluster_id)) and not cluster_id.startswith("-")


def _check_port(name: str, port: int) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise LocalBrokerError(f"{name} must be an integer in 1..65535, got {port!r}")


SASL_SSL_HOST = "localhost"  # what the listener advertises: the name in its certificate
SCRAM_MECHANISM = "SCRAM-SHA-512"


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    host: str = LOOPBACK,
    sasl_ssl_port: int | None = None,
    server_pem: Path | None = None,
    proxied: tuple[int, int] | None = None,
) -> str:
    """server.properties of a single-node KRaft broker+controller, auto topic creation off.

    ``log_dir`` must be absolute (Kafka resolves it against its own working directory).
    With ``sasl_ssl_port`` (and ``server_pem``, key + certificate chain) a second client
    listener speaks SASL_SSL with SCRAM-SHA-512 (users are added when formatting).
    With ``proxied`` = (listen port, advertised port) a PLAINTEXT listener ``PROXIED``
    advertises another port, where a TCP proxy forwards to it: clients bootstrapped there
    keep talking through the proxy (a fault test cuts one client's path to the broker).
    """
    _check_port("port", port)
    _check_port("controller_port", controller_port)
    if port == controller_port:
        raise LocalBrokerError(f"port and controller_port must differ, both are {port}")
    if not log_dir.is_absolute():
        raise LocalBrokerError(f"log_dir must be an absolute path, got {log_dir}")
    listeners = f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}"
    advertised = f"PLAINTEXT://{host}:{port}"
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    secure: list[str] = []
    if sasl_ssl_port is not None:
        _check_port("sasl_ssl_port", sasl_ssl_port)
        if sasl_ssl_port in (port, controller_port) or server_pem is None:
            raise LocalBrokerError("sasl_ssl_port needs its own port and a server_pem")
        listeners += f",SASL_SSL://{host}:{sasl_ssl_port}"
        advertised += f",SASL_SSL://{SASL_SSL_HOST}:{sasl_ssl_port}"
        protocols += ",SASL_SSL:SASL_SSL"
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        secure = [
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={jaas}",
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={server_pem}",
            "listener.name.sasl_ssl.ssl.client.auth=none",
        ]
    if proxied is not None:
        listen_port, advertised_port = proxied
        _check_port("proxied listen port", listen_port)
        _check_port("proxied advertised port", advertised_port)
        if listen_port in (port, controller_port, sasl_ssl_port):
            raise LocalBrokerError("the proxied listener needs its own port")
        listeners += f",PROXIED://{host}:{listen_port}"
        advertised += f",PROXIED://{host}:{advertised_port}"
        protocols += ",PROXIED:PLAINTEXT"
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{controller_port}",
        f"listeners={listeners}",
        f"advertised.listeners={advertised}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map={protocols}",
        *secure,
        f"log.dirs={log_dir}",
        "auto.create.topics.enable=false",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.cleaner.dedupe.buffer.size=16777216",
        "num.network.threads=2",
        "num.io.threads=2",
    ]
    return "\n".join(lines) + "\n"


def render_log4j2_properties(log_file: Path, level: str = "INFO") -> str:
    """A log4j2 config that writes everything at ``level`` and above to ``log_file``."""
    if level.upper() not in {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}:
        raise LocalBrokerError(f"log level must be TRACE..ERROR, got {level!r}")
    return (
        "status = error\n"
        "appender.file.type = File\n"
        "appender.file.name = FILE\n"
        f"appender.file.fileName = {log_file}\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        f"rootLogger.level = {level.upper()}\n"
        "rootLogger.appenderRef.file.ref = FILE\n"
    )


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``host:port`` can be bound right now by a server (SO_REUSEADDR, like Kafka)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when a TCP connection to ``host:port`` succeeds within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def classpath(lib_dir: Path) -> str:
    """The JVM classpath wildcard for every jar in ``lib_dir`` (expanded by java, not a shell)."""
    return f"{lib_dir}/*"


def format_command(
    java: str,
    lib_dir: Path,
    config: Path,
    cluster_id: str,
    heap_mb: int = FORMAT_HEAP_MB,
    scram_users: dict[str, str] | None = None,
) -> list[str]:
    """argv of ``StorageTool format`` for ``config`` with ``cluster_id`` (idempotent), adding
    SCRAM-SHA-512 credentials for ``scram_users`` (name -> password)."""
    if not is_valid_cluster_id(cluster_id):
        raise LocalBrokerError(f"invalid cluster id {cluster_id!r}: need 22 url-safe base64 chars")
    scram: list[str] = []
    for name, password in (scram_users or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name + password):
            raise LocalBrokerError("SCRAM user names and passwords: letters, digits, _ and -")
        scram += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    return [
        java,
        f"-Xmx{heap_mb}m",
        "-cp",
        classpath(lib_dir),
        STORAGE_TOOL_CLASS,
        "format",
        "-t",
        cluster_id,
        "-c",
        str(config),
        "--ignore-formatted",
        *scram,
    ]


def server_command(
    java: str,
    lib_dir: Path,
    config: Path,
    log4j_config: Path,
    logs_dir: Path,
    heap_mb: int = DEFAULT_HEAP_MB,
) -> list[str]:
    """argv of the broker JVM (``kafka.Kafka config``) with a fixed ``heap_mb`` heap."""
    if heap_mb < 128:
        raise LocalBrokerError(f"heap_mb must be >= 128, got {heap_mb}")
    return [
        java,
        f"-Xms{heap_mb}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs_dir}",
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        classpath(lib_dir),
        KAFKA_MAIN_CLASS,
        str(config),
    ]


def maven_command(mvn: str, pom: Path, lib_dir: Path) -> list[str]:
    """argv that copies the broker's runtime jars named by ``pom`` into ``lib_dir``."""
    return [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={lib_dir}",
        "-DincludeScope=runtime",
    ]


def parse_bootstrap(text: str) -> tuple[str, int]:
    """``host:port`` -> ``(host, port)``; raises LocalBrokerError for anything else."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise LocalBrokerError(f"bootstrap address must be host:port, got {text!r}")
    port = int(port_text)
    _check_port("port", port)
    return host, port


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])
