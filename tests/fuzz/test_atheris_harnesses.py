"""The short CI run of the atheris harnesses in ``fuzz/``: each one for a fixed number of
inputs (``-runs``, not a time budget) from a fixed seed, in a subprocess; a crash (an
exception the harness's oracle does not allow, a 10 s hang on one input, more than 1.5 GB
of memory) fails the test with the fuzzer's report and the crashing input. The seed
inputs of ``fuzz/corpus/<name>/`` (crashes found earlier) run first. Longer runs: see
``fuzz/README.md``."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is in the dev extra: make install")

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
RUNS = {"record": 20_000, "headers": 20_000, "schema": 8_000}  # ~20 s together


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(RUNS))
def test_harness_finds_no_crash(name: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"  # libFuzzer writes new inputs to the first directory
    corpus.mkdir()
    seeds = FUZZ_DIR / "corpus" / name
    cmd = [
        sys.executable,
        str(FUZZ_DIR / f"fuzz_{name}.py"),
        f"-runs={RUNS[name]}",
        "-seed=1",
        "-timeout=10",
        "-rss_limit_mb=1536",
        f"-artifact_prefix={tmp_path}/",
        str(corpus),
        *([str(seeds)] if seeds.is_dir() else []),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=110, check=False)
    crashes = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    shown = [f"{p.name}: {base64.b64encode(p.read_bytes()).decode()}" for p in crashes]
    report = "\n".join(done.stderr.splitlines()[-40:])
    assert done.returncode == 0 and not crashes, f"{name}: {shown}\n{report}"
    assert f"Done {RUNS[name]} runs" in done.stderr, report
