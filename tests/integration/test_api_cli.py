"""``streams api`` as a process: it refuses to start without an auth configuration, and in
dev mode it serves real HTTP with the token it printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_BOUND_S = 60.0


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    return {**env, "STREAMS_HOME": str(tmp_path), **extra}


def test_without_auth_configuration_it_exits_1_naming_the_variables(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams", "api"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "STREAMS_API_JWT_SECRET" in done.stderr
    assert "STREAMS_API_KEYS_FILE" in done.stderr
    assert "listening" not in done.stdout


def test_without_a_kafka_cluster_it_exits_1_naming_the_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams", "api"],
        env=_env(tmp_path, STREAMS_DEV_MODE="true", STREAMS_API_PORT="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "STREAMS_KAFKA_BOOTSTRAP" in done.stderr
    assert "listening" not in done.stdout


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_dev_mode_serves_with_the_printed_token(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = _env(
        tmp_path,
        STREAMS_DEV_MODE="true",
        STREAMS_API_PORT="0",
        STREAMS_KAFKA_BOOTSTRAP=kafka_bootstrap,  # ingest and admin audit publish
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "api"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        token = url = None
        while url is None:  # the process prints its token, then where it listens
            line = proc.stdout.readline()
            assert line, (
                f"exited early: {proc.wait(10)} {proc.stderr.read() if proc.stderr else ''}"
            )
            if "Authorization: Bearer " in line:
                token = line.split("Bearer ", 1)[1].strip()
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].strip()
        assert token is not None
        deadline = time.monotonic() + START_BOUND_S
        while _get(f"{url}/health/startup")[0] != 200:
            assert time.monotonic() < deadline, "not started within its bound"
            time.sleep(0.05)
        assert _get(f"{url}/v1/audit?tenant=*")[0] == 401
        status, body = _get(f"{url}/v1/audit?tenant=*", token)
        assert (status, body["records"], body["next"]) == (200, [], None)
    finally:
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, stderr
    assert token not in stderr  # the token went to stdout only, never to the log
