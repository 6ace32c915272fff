"""A real push provider for tests and the demo, shaped like OneSignal's create-notification API.

``POST /notifications`` (the official client's path; also ``/api/v1/notifications``) with
``Authorization: Key <api key>`` and a JSON body ``{app_id, include_subscription_ids,
headings: {en}, contents: {en}, data, isIos, isAndroid, idempotency_key}``; answers like
the provider:

- ``200 {"id": "<notification id>", "errors": {"invalid_player_ids": [...]}}`` when some
  devices are invalid (``invalid_devices``), ``{"id": "", "errors": ["All included players
  are not subscribed"]}`` when all are;
- ``fail_next(n, status)`` answers the next ``n`` requests with that status (500, 429 with
  ``Retry-After``, ...);
- a repeated ``idempotency_key`` answers the first notification's id and records nothing.

Every accepted notification is a ``PushDelivery`` in ``deliveries``. Run it alone for the
demo: ``python -m streams.testing.push_provider --port 8098``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from streams.testing.serve import serve

API_PATHS = ("/api/v1/notifications", "/notifications")
ALL_INVALID = "All included players are not subscribed"


@dataclass(frozen=True)
class PushDelivery:
    notification_id: str
    app_id: str
    devices: tuple[str, ...]
    heading: str
    content: str
    data: dict[str, str]
    ios: bool
    android: bool
    idempotency_key: str
    body: dict[str, Any] = field(repr=False)


class PushProvider:
    """``async with PushProvider(api_key="k") as provider: ... provider.url``."""

    def __init__(self, *, api_key: str = "", host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self._host = host
        self._port = port
        self.invalid_devices: set[str] = set()
        self.deliveries: list[PushDelivery] = []
        self.requests = 0
        self._failures: list[tuple[int, float | None]] = []
        self._by_key: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        for path in API_PATHS:
            app.router.add_post(path, self._create)
        self._runner, self._bound_port = await serve(app, self._host, self._port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> PushProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("PushProvider not started")
        return f"http://{self._host}:{self._bound_port}"

    def fail_next(self, count: int, status: int = 500, retry_after_s: float | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After``)."""
        with self._lock:
            self._failures.extend([(status, retry_after_s)] * count)

    def delivered_to(self, device: str) -> list[PushDelivery]:
        with self._lock:
            return [d for d in self.deliveries if device in d.devices]

    async def _create(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return web.json_response(
                {"errors": ["failing on demand"]}, status=status, headers=headers
            )
        if self.api_key and request.headers.get("Authorization") != f"Key {self.api_key}":
            return web.json_response({"errors": ["Access denied"]}, status=403)
        try:
            body = json.loads(await request.read())
            devices = body["include_subscription_ids"]
            assert (
                isinstance(devices, list) and devices and all(isinstance(d, str) for d in devices)
            )
        except (ValueError, KeyError, TypeError, AssertionError):
            return web.json_response({"errors": ["include_subscription_ids required"]}, status=400)
        key = str(body.get("idempotency_key") or "")
        with self._lock:
            if key and key in self._by_key:
                return web.json_response({"id": self._by_key[key]})
            invalid = [d for d in devices if d in self.invalid_devices]
            valid = tuple(d for d in devices if d not in self.invalid_devices)
            if not valid:
                return web.json_response({"id": "", "errors": [ALL_INVALID]})
            nid = str(uuid.uuid4())
            if key:
                self._by_key[key] = nid
            self.deliveries.append(
                PushDelivery(
                    notification_id=nid,
                    app_id=str(body.get("app_id", "")),
                    devices=valid,
                    heading=str((body.get("headings") or {}).get("en", "")),
                    content=str((body.get("contents") or {}).get("en", "")),
                    data=dict(body.get("data") or {}),
                    ios=bool(body.get("isIos", True)),
                    android=bool(body.get("isAndroid", True)),
                    idempotency_key=key,
                    body=body,
                )
            )
        reply: dict[str, Any] = {"id": nid}
        if invalid:
            reply["errors"] = {"invalid_player_ids": invalid}
        return web.json_response(reply)


class ThreadedPushProvider:
    """The provider on its own loop in a thread (tests whose loop runs something else)."""

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.provider = PushProvider(**kwargs)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PushProvider:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.provider.start(), self.loop).result(10)
        return self.provider

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.provider.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def main() -> None:  # pragma: no cover - manual/demo use
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--api-key", default="")
    args = parser.parse_args()

    async def serve() -> None:
        async with PushProvider(api_key=args.api_key, host=args.host, port=args.port) as p:
            print(f"push provider on {p.url}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":  # pragma: no cover
    main()
