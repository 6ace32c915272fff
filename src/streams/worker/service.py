"""Running a worker process: startup checks, the HTTP port, and signal handling.

SIGTERM/SIGINT: stop fetching, drain (running handlers finish within ``drain_timeout_s``),
commit the finished prefix, stop — all within ``shutdown_timeout_s``. A second signal, or
the deadline, exits at once (exit code 3) without committing unfinished work (mode's own
handlers are replaced: ``compat/signals.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

from streams.worker.compat import QuickLoopClose, SignalledWorker, header_keys
from streams.worker.health import HealthServer
from streams.worker.runtime import Runtime

log = logging.getLogger(__name__)

EXIT_FORCED = 3


class StreamsWorker(QuickLoopClose, SignalledWorker):
    def __init__(self, runtime: Runtime, health: HealthServer, **kwargs: Any) -> None:
        super().__init__(runtime.app, **kwargs)
        header_keys.install()  # a header key that is not UTF-8 must not crash the fetcher
        # faust's terminal spinner sets the root logger to DEBUG at WARN and above: every
        # aiokafka debug call then builds a record (~55 us per event in the benchmarks)
        self.spinner = None
        self._runtime = runtime
        self._health = health
        self._stopping = False

    async def on_first_start(self) -> None:
        await self._health.start()
        log.info(
            "health and metrics on http://%s:%d",
            self._runtime.settings.http_host,
            self._health.port,
        )
        await super().on_first_start()

    def on_stop_signal(self, name: str) -> None:
        if self._stopping:
            log.warning("second %s: exiting now without committing unfinished work", name)
            _exit_now()
        self._stopping = True
        timeout_s = self._runtime.settings.shutdown_timeout_s
        log.info("%s: draining (at most %.0fs)", name, timeout_s)
        self.loop.call_later(timeout_s, self._deadline)
        self.stop_with(self._graceful())

    def _deadline(self) -> None:
        log.error("shutdown deadline passed: exiting without committing unfinished work")
        _exit_now()

    async def _graceful(self) -> None:
        try:
            await self._runtime.drain()
        except Exception:
            log.exception("drain failed")
        await self._health.stop()
        await self.stop()
        self.cancel_start()


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_FORCED)
