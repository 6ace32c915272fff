"""A real Prometheus server (Debian's ``prometheus`` package) for the dashboard test.

``PrometheusServer`` writes a scrape config for the given targets (1 s interval, each with
its own static labels, e.g. ``namespace``/``pod`` as the chart's ServiceMonitor adds them),
starts ``prometheus`` on a free port with a fresh TSDB under ``tmp``, and answers PromQL
through the HTTP API. The process goes through ``streams.testing.processes.ManagedProcess``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from streams.testing.processes import ManagedProcess, free_port

LOOPBACK = "127.0.0.1"


def binary(name: str) -> str:
    """The path of ``prometheus``/``promtool``; AssertionError naming the package if absent."""
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"`{name}` is not on PATH: install Debian's prometheus package "
            "(`apt-get install prometheus`; .ci/run does it)"
        )
    return found


class PrometheusServer:
    def __init__(self, tmp: Path, targets: list[tuple[str, dict[str, str]]]) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": f"streams-{index}",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [address], "labels": labels}],
                }
                for index, (address, labels) in enumerate(targets)
            ],
        }
        self.config_path = tmp / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process = ManagedProcess(
            [
                binary("prometheus"),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            env=dict(os.environ),
            log_path=tmp / "prometheus.log",
            die_with_parent=True,
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> PrometheusServer:
        self.process.start()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.process.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"prometheus not ready in {timeout_s}s:\n{self.process.tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.proc is not None:
            self.process.stop(10.0)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the ``data`` of a success, AssertionError with the error else."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def now_s(self) -> float:
        """The server's clock (query ranges are in its time)."""
        return float(self.api("query", query="time()")["result"][1])

    def query_range(self, expr: str, start_s: float, end_s: float, step_s: float = 1.0) -> Any:
        return self.api(
            "query_range", query=expr, start=f"{start_s:.3f}", end=f"{end_s:.3f}", step=str(step_s)
        )["result"]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)
