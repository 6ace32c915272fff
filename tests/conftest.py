"""Shared fixtures: one real Kafka broker per test session, unique names per test.

The broker (``kafka_bootstrap``) is chosen in this order, and started lazily, only when a
test asks for it:

1. ``STREAMS_KAFKA_BOOTSTRAP`` from the environment (an existing cluster);
2. an ``apache/kafka`` container through testcontainers when a Docker engine answers;
3. ``streams.broker.local.LocalBroker`` (the code path of ``streams broker start``) in a
   fresh temp dir with free ports, sharing the jar cache of ``$STREAMS_HOME/broker-cache``.

Tests under ``tests/unit`` must not use the broker.

Every test must also clean up after itself: one that leaves an asyncio task pending on its
event loop, or a thread running, fails (``_fail_on_leaked_tasks``, ``_fail_on_leaked_threads``).
Threads started by a session- or module-scoped fixture belong to that fixture and are not
counted against the test that happened to start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from streams.broker.tls import SaslSslListener
from streams.settings import Settings

DOCKER_PROBE_TIMEOUT_S = 2.0
BROKER_START_TIMEOUT_S = 120.0
_broker_notes: list[str] = []

# CI runs the property tests derandomized: the same examples every run, so a run that
# passes once passes again (a new counterexample found locally is a new regression test)
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs a real Kafka broker")
    config.addinivalue_line("markers", "slow: long-running reliability scenarios")
    config.addinivalue_line(
        "markers", "serial: timing-bound; runs alone under xdist (tests/support/serial.py)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the broker fixture ``kafka`` (select with ``-m``)."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Setup, call and teardown of a ``serial`` test while no other test runs."""
    from tests.support.serial import exclusive

    with exclusive(item.get_closest_marker("serial") is not None):
        return (yield)


def pytest_runtest_setup(item: pytest.Item) -> None:
    unit_dir = item.config.rootpath / "tests" / "unit"
    if "kafka_bootstrap" in getattr(item, "fixturenames", ()) and item.path.is_relative_to(
        unit_dir
    ):
        pytest.fail(
            f"{item.nodeid}: unit tests must not use a Kafka broker; "
            "move the test to tests/integration",
            pytrace=False,
        )


# --- leaks: asyncio tasks and threads a test leaves behind ---------------------------------

LEAK_GRACE_S = 2.0  # a thread told to stop may take a moment to end
_fixture_threads: set[threading.Thread] = set()  # started by wider-scoped fixtures


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    if fixturedef.scope == "function":
        result = yield
        if fixturedef.argname == "_function_scoped_runner":  # pytest-asyncio's loop runner
            # runs after the test's async fixtures are torn down, before the loop closes
            # (which would cancel leftovers silently)
            fixturedef.addfinalizer(lambda: _fail_on_leaked_tasks(result.get_loop()))
        return result
    before = set(threading.enumerate())
    try:
        return (yield)
    finally:
        _fixture_threads.update(set(threading.enumerate()) - before)


def _fail_on_leaked_tasks(loop: asyncio.AbstractEventLoop) -> None:
    if loop.is_closed():
        return
    for _ in range(20):  # let tasks cancelled during teardown finish
        if not asyncio.all_tasks(loop):
            return
        loop.run_until_complete(asyncio.sleep(0))
    leaked = asyncio.all_tasks(loop)
    if not leaked:
        return
    names = sorted(getattr(t.get_coro(), "__qualname__", repr(t)) for t in leaked)
    for task in leaked:  # do not let them run into the next test
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.gather(*leaked, return_exceptions=True))
    pytest.fail(f"the test left {len(leaked)} asyncio task(s) pending: {names}", pytrace=False)


@pytest.fixture(autouse=True)
def _fail_on_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread it started running (daemon or not)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    leaked: list[threading.Thread] = []
    for thread in set(threading.enumerate()) - before - _fixture_threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread)
    if leaked:
        names = sorted(f"{t.name} (daemon={t.daemon})" for t in leaked)
        pytest.fail(f"the test left {len(leaked)} thread(s) running: {names}", pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for note in _broker_notes:
        terminalreporter.write_line(note)


# --- the session broker -------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a real Kafka broker for the whole session (see the module docstring)."""
    configured = os.environ.get("STREAMS_KAFKA_BOOTSTRAP", "").strip()
    if configured:
        _broker_notes.append(f"kafka: configured cluster {configured} (STREAMS_KAFKA_BOOTSTRAP)")
        yield configured
    elif _docker_answers(DOCKER_PROBE_TIMEOUT_S):
        yield from _container_broker()
    else:
        yield from _local_broker(tmp_path_factory.mktemp("kafka-broker"))


def _docker_answers(timeout_s: float) -> bool:
    """True when a Docker engine answers a ping within ``timeout_s``.

    A local socket that does not exist is "no" at once: docker-py, asked to connect to it,
    leaves an unclosed socket behind (a ResourceWarning, an error in this suite)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        path = host.removeprefix("unix://")
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(timeout_s)
                probe.connect(path)
        except OSError:
            return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=max(1, round(timeout_s)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _local_broker(state_dir: Path) -> Iterator[str]:
    from streams.broker.local import LocalBroker

    cache_dir = Settings().home / "broker-cache"
    # with a SASL_SSL listener too (tests/integration/test_sasl_ssl.py)
    broker = LocalBroker(state_dir, cache_dir=cache_dir, die_with_parent=True, sasl_ssl=True)
    started = time.monotonic()
    status = broker.start(timeout_s=BROKER_START_TIMEOUT_S)
    assert status.bootstrap is not None
    _sasl_listeners[status.bootstrap] = status.sasl_ssl
    _broker_notes.append(
        f"kafka: local broker {status.bootstrap} ready in {time.monotonic() - started:.1f}s "
        f"(log {broker.log_file})"
    )
    try:
        yield status.bootstrap
    finally:
        # its data dies with the session: SIGKILL saves the ~15 s of a controlled shutdown
        broker.stop(crash=True)


_sasl_listeners: dict[str, SaslSslListener | None] = {}


@pytest.fixture(scope="session")
def sasl_ssl_listener(kafka_bootstrap: str) -> SaslSslListener:
    """The SASL_SSL listener of the session broker: the one this session started, or the
    local broker of ``$STREAMS_HOME`` (``streams broker start --sasl-ssl``) when it is the
    configured cluster; skipped for any other cluster (it has no listener we know of)."""
    from streams.broker.local import LocalBroker

    listener = _sasl_listeners.get(kafka_bootstrap)
    if listener is None:
        local = LocalBroker.from_settings(Settings()).status()
        if local.running and local.bootstrap == kafka_bootstrap:
            listener = local.sasl_ssl
    if listener is None:
        pytest.skip(
            f"{kafka_bootstrap} has no SASL_SSL listener we know of: run the suite without "
            "STREAMS_KAFKA_BOOTSTRAP, or `streams broker start --fresh --sasl-ssl`"
        )
    return listener


def _container_broker() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    from streams.broker.config import free_ports
    from streams.broker.jars import default_pom_path, read_kafka_version
    from streams.broker.local import metadata_answers

    image = f"apache/kafka:{read_kafka_version(default_pom_path())}"
    port = free_ports(1)[0]
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    container = DockerContainer(image).with_bind_ports(9092, port)
    for key, value in env.items():
        container = container.with_env(key, value)
    started = time.monotonic()
    container.start()
    try:
        bootstrap = f"127.0.0.1:{port}"
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while not metadata_answers(bootstrap, timeout_s=2.0):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {image} container did not answer on {bootstrap}")
            time.sleep(0.5)
        _broker_notes.append(
            f"kafka: {image} container {bootstrap} ready in {time.monotonic() - started:.1f}s"
        )
        yield bootstrap
    finally:
        container.stop()


# --- per-test names and settings ----------------------------------------------------------


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix unique to this test, e.g. ``t3f9a2c1d.``."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def app_id(request: pytest.FixtureRequest) -> str:
    """A faust app id (= consumer group) unique to this test and named after it."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"test-{name}-{uuid.uuid4().hex[:6]}"


def delete_topics_of(bootstrap: str, prefixes: tuple[str, ...]) -> int:
    """Delete every topic whose name starts with one of ``prefixes`` (test teardown).

    One broker serves the whole session: without this, thousands of test partitions pile
    up and the broker runs out of file descriptors. Returns how many were deleted.
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
    except Exception:  # the broker is gone: nothing to clean
        return 0
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # already deleted by the test itself
                future.result(timeout=30)
    return len(names)


@pytest.fixture
def make_settings(
    kafka_bootstrap: str, topic_prefix: str, app_id: str, tmp_path: Path
) -> Iterator[Callable[..., Settings]]:
    """A factory of Settings bound to the session broker; keyword arguments override.

    The test's topics (its prefix, its app id's changelogs) are deleted afterwards.
    """
    prefixes: set[str] = {topic_prefix, f"{app_id}-"}

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap": kafka_bootstrap,
            "topic_prefix": topic_prefix,
            "app_id": app_id,
            "replication_factor_override": 1,
            "home": tmp_path / "streams-home",
        }
        values.update(overrides)
        made = Settings(**values)
        if made.topic_prefix:
            prefixes.add(made.topic_prefix)
        prefixes.add(f"{made.app_id}-")
        return made

    yield make
    if not os.environ.get("STREAMS_TEST_KEEP_TOPICS"):  # keep them to debug a failure
        delete_topics_of(kafka_bootstrap, tuple(prefixes))


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings for this test: session broker, unique topic prefix and app id, RF 1."""
    return make_settings()
