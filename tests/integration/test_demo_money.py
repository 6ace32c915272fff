"""``streams up``'s money step end to end: a payment, its receipt, a refund and a renewal
against the local provider, and a signed dispute webhook through the API, with real
workers and the SMTP catcher."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.test_demo import REPO, _env


@pytest.mark.timeout(200)
def test_up_money_step_pays_receipts_refunds_and_renews(
    kafka_bootstrap: str, topic_prefix: str, app_id: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-m", "streams", "up", "--exit-when-done", "--timeout", "90",
         "--smtp-port", "0", "--webhook-port", "0", "--http-port", "0"],
        env=_env(kafka_bootstrap, topic_prefix, app_id, home), cwd=REPO,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr}"
    line = re.search(r"money\s+(.*charges at the local provider.*)$", out, re.M)
    assert line, out
    assert "2 charges" in line.group(1) and "refunded 10.00 CAD" in line.group(1)
    for what in ("payment receipt", "renewal notice", "renewal receipt", "refund confirmation"):
        assert what in line.group(1), out
    assert re.search(
        r"signed dispute webhook -> http://\S+/v1/providers/stripe/webhooks: "
        r"HTTP 200; admin email received",
        out,
    ), out
    mails = [json.loads(x) for x in (home / "logs" / "smtp.jsonl").read_text().splitlines()]
    subjects = {m["subject"] for m in mails}
    assert any("pay-" in s for s in subjects), subjects  # the receipt names the order
