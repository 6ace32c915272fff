"""The alert rules with promtool: they load, and every alert has a firing and a quiet case."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from tests.support.prometheus import binary

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "helm" / "streams" / "files" / "alerts.rules.yml"
TESTS = REPO / "tests" / "promtool" / "alerts.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def alert_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_rules_are_valid() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == alert_names()
    assert quiet == alert_names()


def test_every_alert_has_a_runbook_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook_url"].rpartition("#")[2]
            assert anchor == f"runbook-{rule['alert'].lower()}"
            assert re.search(rf"^#### Runbook: {rule['alert']}$", readme, re.M), rule["alert"]


def test_a_broken_expectation_fails(tmp_path: Path) -> None:
    # the unit tests can fail: the same file expecting a label that is not there
    broken = TESTS.read_text().replace("topic: prod.email}", "topic: prod.push}", 1)
    assert broken != TESTS.read_text()
    path = tmp_path / "broken.test.yml"
    path.write_text(broken.replace("../../helm/", str(REPO / "helm") + "/"))
    done = promtool("test", "rules", str(path))
    assert done.returncode != 0
