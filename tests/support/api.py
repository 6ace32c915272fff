"""``streams api`` as a real process for the API tests, and the tokens they send.

``start_api`` runs ``python -m streams api`` (HS256 secret, issuer, audience, a free port)
against ``settings``' broker and topic prefix, with a catalog reduced to ``families``, and
waits for ``/health/startup``. Tokens: ``token(roles, tenant)`` signed with ``SECRET``;
``expired_token`` and ``forged_token`` (signed with another secret) for the 401 cases.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from streams.broker import admin as topics_admin
from streams.catalog import load_catalog
from streams.settings import Settings
from streams.testing.processes import ManagedProcess, free_port, write_catalog

SECRET = "api-tests-secret-" + "s" * 32
OTHER_SECRET = "not-the-api-secret-" + "o" * 32
ISSUER, AUDIENCE = "https://issuer.test", "streams-api"
START_BOUND_S = 90.0
STOP_BOUND_S = 20.0


def token(
    roles: Sequence[str], tenant: str | None = "acme", *, key: str = SECRET, **claims: Any
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": f"{'+'.join(roles) or 'nobody'}@{tenant or 'platform'}",
        "roles": list(roles),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 3600,
    }
    if tenant is not None:
        body["tenant"] = tenant
    body.update(claims)
    return jwt.encode(body, key, "HS256")


def expired_token(roles: Sequence[str], tenant: str | None = "acme") -> str:
    long_ago = int(time.time()) - 7200
    return token(roles, tenant, iat=long_ago, exp=long_ago + 60)


def forged_token(roles: Sequence[str], tenant: str | None = "acme") -> str:
    return token(roles, tenant, key=OTHER_SECRET)


def bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


@dataclass
class ApiProcess:
    process: ManagedProcess
    url: str
    settings: Settings

    def log(self) -> str:
        return self.process.tail(80)


def provision(settings: Settings, families: Sequence[str]) -> None:
    """Create the topics of ``families`` under ``settings``' prefix."""
    full = load_catalog(settings.catalog_path)
    narrowed = full.model_copy(update={"families": {f: full.families[f] for f in families}})
    topics_admin.apply(settings, narrowed)


@contextmanager
def running_api(
    settings: Settings,
    workdir: Path,
    *,
    families: Sequence[str] = ("audit",),
    extra: Mapping[str, str] | None = None,
) -> Iterator[ApiProcess]:
    """A ``streams api`` process (module docstring); stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = write_catalog(workdir, {f: {} for f in families})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update(
        {
            "STREAMS_KAFKA_BOOTSTRAP": settings.bootstrap,
            "STREAMS_TOPIC_PREFIX": settings.topic_prefix,
            "STREAMS_CATALOG_PATH": str(catalog),
            "STREAMS_HOME": str(workdir / "home"),
            "STREAMS_API_PORT": str(port),
            "STREAMS_API_JWT_SECRET": SECRET,
            "STREAMS_API_JWT_ISSUER": ISSUER,
            "STREAMS_API_JWT_AUDIENCE": AUDIENCE,
            "STREAMS_API_RATE_LIMIT_PER_MIN": "1000000",
            **(extra or {}),
        }
    )
    process = ManagedProcess(
        [sys.executable, "-m", "streams", "api"],
        env,
        workdir / "api.log",
        die_with_parent=True,
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(f"{url}/health/startup", timeout_s=START_BOUND_S, interval_s=0.1)
        yield ApiProcess(process, url, settings)
    finally:
        process.stop(STOP_BOUND_S)
