"""``streams schemas list`` and ``streams schemas check``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from streams.cli import cli
from streams.serde import SchemaStore

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"


def test_check_passes_on_the_repository_schemas() -> None:
    result = CliRunner().invoke(cli, ["schemas", "check", "--dir", str(SCHEMAS_DIR)])
    assert result.exit_code == 0, result.output
    assert "every version compatible" in result.output


def test_check_fails_with_one_line_per_problem(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS_DIR, schemas)
    for event_type in ("email.requested", "push.requested"):
        data = json.loads((schemas / event_type / "v1.avsc").read_text())
        data["fields"].append({"name": "extra", "type": "string", "doc": "no default"})
        (schemas / event_type / "v2.avsc").write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["schemas", "check", "--dir", str(schemas)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{schemas}/email.requested/v2.avsc: against v1: extra: missing")
    assert lines[1].startswith(f"{schemas}/push.requested/v2.avsc: against v1: extra: missing")
    assert "2 problem(s)" in result.stderr


def test_check_reports_a_missing_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schemas", "check", "--dir", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "not a directory of schemas" in result.stdout


def test_list_prints_type_version_fingerprint() -> None:
    result = CliRunner().invoke(cli, ["schemas", "list", "--dir", str(SCHEMAS_DIR)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "VERSION", "FINGERPRINT", "FILE"]
    store = SchemaStore.load(SCHEMAS_DIR)
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == len(store.all_versions)
    latest = store.latest("email.requested")
    assert ["email.requested", "v1", latest.fingerprint_hex, str(latest.path)] in rows
