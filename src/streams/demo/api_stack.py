"""The HTTP API in ``streams up`` (``make run``): ``streams api`` as a managed process on
this run's cluster, with a throw-away HS256 secret minted here, so the supervisor can
print the API's URL and a dev token (viewer+admin, no tenant, valid 12 h) for curl.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from streams.api.auth_setup import DEV_AUDIENCE, DEV_ISSUER, dev_token
from streams.settings import Settings
from streams.testing import processes
from streams.testing.processes import LOOPBACK, free_port, port_free

DEFAULT_API_PORT = 8080
API_READY_TIMEOUT_S = 60.0
API_READY_POLL_S = 0.25
API_STOP_BOUND_S = 10.0


@dataclass
class RunningApi:
    process: processes.ManagedProcess
    url: str
    token: str


def start_api(settings: Settings, log_path: Path, run_marker: str) -> RunningApi:
    """Start ``streams api`` and wait for ``/health/startup``; raises NotReady."""
    port = DEFAULT_API_PORT if port_free(DEFAULT_API_PORT) else free_port()
    secret = secrets.token_urlsafe(48)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STREAMS_API_") and k != "STREAMS_DEV_MODE"
    }
    env.update(
        {
            "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
            "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
            "STREAMS_CATALOG_PATH": str(settings.catalog_path.resolve()),
            "STREAMS_SCHEMAS_DIR": str(settings.schemas_dir.resolve()),
            "STREAMS_HOME": str(settings.home.resolve()),
            "STREAMS_API_HOST": LOOPBACK,
            "STREAMS_API_PORT": str(port),
            "STREAMS_API_JWT_SECRET": secret,
            "STREAMS_API_JWT_ISSUER": DEV_ISSUER,
            "STREAMS_API_JWT_AUDIENCE": DEV_AUDIENCE,
            "PYTHONUNBUFFERED": "1",
        }
    )
    process = processes.ManagedProcess(
        [sys.executable, "-m", "streams", "api"],
        env,
        log_path,
        own_session=True,
        die_with_parent=True,
        log_header=run_marker,
    )
    process.start()
    url = f"http://{LOOPBACK}:{port}"
    try:
        process.wait_ready(
            f"{url}/health/startup", timeout_s=API_READY_TIMEOUT_S, interval_s=API_READY_POLL_S
        )
    except processes.NotReady:
        process.stop(API_STOP_BOUND_S)
        raise
    return RunningApi(process, url, dev_token(SecretStr(secret)))


def stop_api(api: RunningApi) -> str:
    stopped = api.process.stop(API_STOP_BOUND_S)
    how = "SIGKILL" if stopped.killed else f"exit {stopped.returncode}"
    return f"api ({how})"
