"""The real ``streams worker`` CLI refuses to start on a missing or placeholder secret
outside dev mode, naming the variable; dev mode fills in per-run secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STRONG = "p9V0-3mN2q-8xYt-Lw4e"
FAMILIES = ("--family", "email", "--family", "webhook")
BASE = {
    "STREAMS_WEBHOOK_SIGNING_SECRET": STRONG,
    "STREAMS_UNSUBSCRIBE_SECRET": STRONG,
}


def run_worker(
    kafka_bootstrap: str, home: Path, **variables: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update(
        {
            "STREAMS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "STREAMS_HOME": str(home),
            "STREAMS_TOPIC_PREFIX": "secrets-refusal.",
            "PYTHONPATH": str(REPO / "src"),
        }
    )
    env.update({k: v for k, v in variables.items() if v != "<unset>"})
    for name in [k for k, v in variables.items() if v == "<unset>"]:
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "streams", "worker", "--skip-topology-check", *FAMILIES],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {**BASE, "STREAMS_WEBHOOK_SIGNING_SECRET": "change-me"},
            "error: STREAMS_WEBHOOK_SIGNING_SECRET: is a placeholder",
        ),
        (
            {**BASE, "STREAMS_UNSUBSCRIBE_SECRET": "secret"},
            "error: STREAMS_UNSUBSCRIBE_SECRET: is a placeholder",
        ),
        (
            {**BASE, "STREAMS_WEBHOOK_SIGNING_SECRET": "<unset>"},
            "error: STREAMS_WEBHOOK_SIGNING_SECRET: not set",
        ),
        (
            {**BASE, "STREAMS_UNSUBSCRIBE_SECRET": ""},
            "error: STREAMS_UNSUBSCRIBE_SECRET: must not be empty",
        ),
        (
            {**BASE, "STREAMS_SMTP_USERNAME": "mailer", "STREAMS_SMTP_PASSWORD": STRONG},
            "refusing to send credentials in clear text",
        ),
        (
            # dev mode fills in missing secrets, never accepts placeholders
            {"STREAMS_DEV_MODE": "true", "STREAMS_WEBHOOK_SIGNING_SECRET": "change-me"},
            "error: STREAMS_WEBHOOK_SIGNING_SECRET: is a placeholder",
        ),
    ],
)
def test_worker_refuses_to_start_naming_the_variable(
    kafka_bootstrap: str, tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    done = run_worker(kafka_bootstrap, tmp_path, **variables)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert "change-me" not in done.stderr.replace(message, "")
