"""``streams up --exit-when-done`` end to end against the test broker: the demo settles,
its summary adds up, everything it started stops, and the DLQ holds what it says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(
    r"^  (email|webhook|total)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)"  # published done DLQ retries
    r"\s+(\d+) (=|!=) (\d+) \+ (\d+)\s+(\S+)$"  # the check: 26 = 25 + 1  ok
)


def _env(kafka_bootstrap: str, topic_prefix: str, app_id: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    env.update(
        {
            "STREAMS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "STREAMS_TOPIC_PREFIX": topic_prefix,
            "STREAMS_APP_ID": app_id,
            "STREAMS_REPLICATION_FACTOR_OVERRIDE": "1",
            "STREAMS_HOME": str(home),
            "PYTHONPATH": str(REPO / "src"),
        }
    )
    return env


@pytest.mark.timeout(150)
def test_up_exit_when_done_settles_and_adds_up(
    kafka_bootstrap: str, topic_prefix: str, app_id: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = _env(kafka_bootstrap, topic_prefix, app_id, home)
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "up",
            "--exit-when-done",
            "--no-money",  # the money step has its own test (test_demo_money.py)
            "--timeout",
            "60",
            "--smtp-port",
            "0",
            "--webhook-port",
            "0",
            "--http-port",
            "0",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr}"
    assert elapsed < 60, f"streams up took {elapsed:.1f}s\n{out}"
    assert "\x1b[" not in out  # not a terminal: no colours, no redraws

    rows = {m.group(1): m.groups() for line in out.splitlines() if (m := ROW.match(line))}
    assert set(rows) == {"email", "webhook", "total"}, out
    expected = {"email": (26, 1), "webhook": (17, 3), "total": (43, 4)}
    for name, (published, dlq) in expected.items():
        _, pub, done_n, dlq_n, _retries, check_pub, eq, check_done, check_dlq, mark = rows[name]
        assert (int(pub), int(dlq_n)) == (published, dlq), out
        assert int(pub) == int(done_n) + int(dlq_n) and eq == "=" and mark == "ok", out
        assert (check_pub, check_done, check_dlq) == (pub, done_n, dlq_n)
    assert re.search(r"^settled in [\d.]+s: 43 events published, 39 done, 4 in the DLQ", out, re.M)
    assert "problems:" not in out

    # the dead letters of the run, each with its reason and a position to `show`
    dead = re.findall(r"^    (email|webhook)\s+(\d+:\d+)\s+(\w+)\s+(.*)$", out, re.M)
    assert sorted((f, r) for f, _, r, _ in dead) == [
        ("email", "permanent"),
        ("webhook", "exhausted"),
        ("webhook", "permanent"),
        ("webhook", "permanent"),
    ], out
    messages = " | ".join(m for *_, m in dead)
    assert "550 5.1.1" in messages
    assert "HTTP 400" in messages
    assert "169.254.169.254" in messages and "private address" in messages

    # where to look; logs in files, not in the terminal
    metrics_url = re.search(r"metrics\s+(http://127\.0\.0\.1:\d+/metrics)", out)
    assert metrics_url, out
    assert re.search(r"health\s+http://127\.0\.0\.1:\d+/health/ready", out)
    assert "streams dlq list webhook" in out
    assert f"-t {topic_prefix}webhook.dlq" in out
    worker_log = home / "logs" / "worker.log"
    assert f"worker {worker_log}" in out and worker_log.stat().st_size > 0
    assert "[INFO]" not in out and "Traceback" not in out

    # the notification phase (issue 12): every check passed
    for label in (
        "push, consented promotional",
        "push, promotional without consent",
        "push, quiet hours",
        "push, invalid device token",
        "email, hard-bounced address",
    ):
        assert re.search(rf"^  ok {re.escape(label)}", out, re.M), out

    # everything it started has stopped
    pid = int(re.search(r"worker\s+pid (\d+)", out).group(1))  # type: ignore[union-attr]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert re.search(
        r"^stopped: api \(exit 0\), worker \(exit 0, [\d.]+s\), webhook receiver, SMTP catcher, "
        r"push provider$",
        out,
        re.M,
    ), out
    # the API ran beside it: its URL and a dev token were printed
    assert re.search(r"api\s+http://127\.0\.0\.1:\d+ \(OpenAPI: ", out), out
    assert re.search(r"^\s+Authorization: Bearer [\w-]+\.[\w-]+\.[\w-]+$", out, re.M), out

    # the peers got what the summary says
    mails = [json.loads(line) for line in (home / "logs" / "smtp.jsonl").read_text().splitlines()]
    assert len({m["event_id"] for m in mails}) == 25
    assert {m["language"] for m in mails} == {"en", "fr"}
    hooks = [
        json.loads(line) for line in (home / "logs" / "webhooks.jsonl").read_text().splitlines()
    ]
    assert all(h["verified"] for h in hooks)
    assert len({h["event_id"] for h in hooks if 200 <= h["status"] < 300}) == 14

    # and the DLQ reader sees the same records
    listed = subprocess.run(
        [sys.executable, "-m", "streams", "dlq", "list", "webhook", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    reasons = sorted(r["reason"] for r in json.loads(listed.stdout))
    assert reasons == ["exhausted", "permanent", "permanent"]
