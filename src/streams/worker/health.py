"""The worker's HTTP port: ``/metrics``, ``/health/live``, ``/health/ready``,
``/health/startup``.

Startup is done once the worker has booted and read the whole control topic (200, else
503); readiness adds assignment, recovery and the broker. Both bodies list the families
the control plane has paused here (``paused_families``): a paused family is not a fault.

faust's own web server (and its unauthenticated ``/table`` views) is disabled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streams.worker.runtime import Runtime

_BROKER_CHECK_TTL_S = 5.0


class HealthServer:
    def __init__(
        self,
        runtime: Runtime,
        *,
        host: str,
        port: int,
        broker_check: Callable[[], bool],
    ) -> None:
        self._runtime = runtime
        self._host = host
        self._port = port
        self._broker_check = broker_check
        self._broker_ok = False
        self._broker_checked_at = 0.0
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/health/ready", self._ready)
        app.router.add_get("/health/startup", self._startup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        addresses = self._runner.addresses  # the bound port when ``port`` was 0
        if addresses:
            self.port = addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        """The engine's bundle, then prometheus_client's default registry: the process
        collectors and the metrics jobs register there (audit, emitter, ...)."""
        body = generate_latest(self._runtime.metrics.registry)
        if self._runtime.metrics.registry is not REGISTRY:
            body += generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _broker(self) -> bool:
        now = time.monotonic()
        if now - self._broker_checked_at > _BROKER_CHECK_TTL_S:
            self._broker_ok = await asyncio.to_thread(self._broker_check)
            self._broker_checked_at = now
        return self._broker_ok

    async def _ready(self, request: web.Request) -> web.Response:
        checks = self._runtime.ready()
        checks["broker_reachable"] = await self._broker()
        ok = all(checks.values())
        body: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "checks": checks,
            "paused_families": self._runtime.paused_families(),
        }
        if self._runtime.topology_errors:
            body["topology_errors"] = self._runtime.topology_errors
        return web.json_response(body, status=200 if ok else 503)

    async def _startup(self, request: web.Request) -> web.Response:
        checks = self._runtime.ready()
        ok = checks["started"] and checks["control_loaded"]
        body = {
            "status": "ok" if ok else "starting",
            "checks": {k: checks[k] for k in ("started", "control_loaded")},
            "paused_families": self._runtime.paused_families(),
        }
        return web.json_response(body, status=200 if ok else 503)
