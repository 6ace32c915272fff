"""The process harness against real subprocesses: ports, catalogs, logs, readiness, stop."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from streams.errors import StreamsError
from streams.testing import processes as p

# exits 0 on SIGTERM (the default action would be -15: say it is ours)
GRACEFUL = (
    "import signal,sys,time; signal.signal(15, lambda *a: sys.exit(0)); "
    "print('up', flush=True); time.sleep(60)"
)
STUBBORN = (
    "import signal,time; signal.signal(15, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
)


def _process(
    tmp_path: Path, code: str, *, own_session: bool = False, log_header: str | None = None
) -> p.ManagedProcess:
    return p.ManagedProcess(
        [sys.executable, "-c", code],
        {},
        tmp_path / "log" / "p.log",
        own_session=own_session,
        log_header=log_header,
    )


def _started(proc: p.ManagedProcess) -> p.ManagedProcess:
    """Started, and its signal handler installed (it said "up")."""
    proc.start()
    deadline = time.monotonic() + 30
    while "up" not in proc.tail(1):
        assert proc.poll() is None and time.monotonic() < deadline, proc.tail()
        time.sleep(0.01)
    return proc


def test_a_free_port_can_be_bound_and_a_bound_one_is_not_free() -> None:
    port = p.free_port()
    assert p.port_free(port)
    with socket.socket() as sock:
        sock.bind((p.LOOPBACK, port))
        sock.listen()
        assert not p.port_free(port)


def test_write_catalog_keeps_only_the_named_families_with_their_overrides(
    tmp_path: Path,
) -> None:
    path = p.write_catalog(tmp_path, {"audit": {"partitions": 2}})
    data = yaml.safe_load(path.read_text())
    assert path == tmp_path / "topics.yaml"
    assert list(data["families"]) == ["audit"]
    assert data["families"]["audit"]["partitions"] == 2
    assert data["defaults"] == yaml.safe_load(p.CHECKOUT_CATALOG.read_text())["defaults"]


def test_write_catalog_refuses_an_invalid_override(tmp_path: Path) -> None:
    with pytest.raises(StreamsError):
        p.write_catalog(tmp_path, {"audit": {"partitions": 0}})


def test_output_goes_to_the_log_after_the_header(tmp_path: Path) -> None:
    proc = _process(tmp_path, "print('hello')", log_header="run abc")
    proc.start()
    assert proc.wait(10) == 0
    text = proc.log_path.read_text()
    assert text.startswith("\n==== run abc ") and text.endswith("hello\n")
    assert proc.tail(1) == "hello"


def test_a_graceful_process_stops_on_sigterm(tmp_path: Path) -> None:
    proc = _started(_process(tmp_path, GRACEFUL))
    stopped = proc.stop(10.0)
    assert (stopped.returncode, stopped.killed, stopped.had_exited) == (0, False, False)
    assert proc.stop(10.0).had_exited


def test_a_process_ignoring_sigterm_is_killed_after_the_bound(tmp_path: Path) -> None:
    proc = _started(_process(tmp_path, STUBBORN, own_session=True))
    stopped = proc.stop(0.3)
    assert stopped.killed and stopped.returncode == -9
    assert stopped.elapsed_s >= 0.3


def test_hurry_kills_at_once(tmp_path: Path) -> None:
    proc = _started(_process(tmp_path, STUBBORN))
    stopped = proc.stop(60.0, hurry=lambda: True)
    assert stopped.killed and stopped.elapsed_s < 30


def test_readiness_waits_for_200(tmp_path: Path) -> None:
    (tmp_path / "health").mkdir()
    (tmp_path / "health" / "ready").write_text('{"status": "ok"}')
    port = p.free_port()
    cmd = [sys.executable, "-m", "http.server", "--bind", p.LOOPBACK, str(port)]
    proc = p.WorkerProcess(cmd, {}, tmp_path / "s.log", cwd=tmp_path, http_port=port)
    proc.start()
    try:
        assert proc.wait_healthy(30.0, interval_s=0.05) >= 0.0
        assert proc.health() == (200, {"status": "ok"})
        assert proc.health("/nothing-here")[0] == 404
    finally:
        proc.stop(10.0)


def test_readiness_fails_when_the_process_exits(tmp_path: Path) -> None:
    proc = _process(tmp_path, "raise SystemExit(3)")
    proc.start()
    with pytest.raises(p.NotReady) as raised:
        proc.wait_ready(f"http://127.0.0.1:{p.free_port()}/", timeout_s=30.0, interval_s=0.05)
    assert raised.value.exit_code == 3


def test_readiness_gives_up_after_its_timeout(tmp_path: Path) -> None:
    proc = _process(tmp_path, GRACEFUL)
    proc.start()
    try:
        with pytest.raises(p.NotReady) as raised:
            proc.wait_ready(f"http://127.0.0.1:{p.free_port()}/", timeout_s=0.2, interval_s=0.05)
        assert raised.value.exit_code is None and raised.value.last == "no answer"
    finally:
        proc.stop(10.0)


def test_a_worker_command_and_env_carry_the_settings(tmp_path: Path) -> None:
    from streams.settings import Settings

    cmd = p.worker_command(
        ["audit"], handlers="h.mod", loglevel="warning", python_args=("-X", "dev")
    )
    assert cmd[1:] == [
        "-X",
        "dev",
        "-m",
        "streams",
        "worker",
        "--handlers",
        "h.mod",
        "--family",
        "audit",
        "--loglevel",
        "warning",
    ]
    settings = Settings(
        kafka_bootstrap="k:9092",
        topic_prefix="t.",
        app_id="a",
        replication_factor_override=1,
        home=tmp_path,
    )
    env = p.worker_env(
        settings, http_port=6066, inherit={"KEEP": "1"}, extra={"STREAMS_APP_ID": "b"}
    )
    assert env["KEEP"] == "1" and env["STREAMS_KAFKA_BOOTSTRAP"] == "k:9092"
    assert env["STREAMS_HTTP_PORT"] == "6066" and env["STREAMS_REPLICATION_FACTOR_OVERRIDE"] == "1"
    assert env["STREAMS_APP_ID"] == "b" and env["STREAMS_HOME"] == str(tmp_path.resolve())
