"""A real webhook receiver (aiohttp) for tests and the local demo.

It verifies every request's ``v2`` signature (``signing.verify_request``: event id, the
URL it was sent to, event name, timestamp and body) with its secret(s): one list for every
subscription, or a mapping from subscription id (``X-Streams-Subscription-Id``) to that
subscription's secrets (current and previous while rotating). It records each delivery
(path, headers, body, verified flag and reason) and answers as told:

- ``receiver.script(path, [503, 200])``: answers in order, the last one repeating; an entry
  is a status or a ``Reply`` (status, headers such as ``Retry-After``, body, delay_s,
  stall_s).
- Built-in paths, no script needed (``seq`` is statuses joined by ``-then-``):
  ``/fail/503-then-200`` (per path: 503 on the first call, 200 after),
  ``/fail/429?retry_after=7`` (every non-2xx answer carries ``Retry-After: 7``),
  ``/fail/400?body=...`` (answer body), ``/slow/<seconds>`` (sleeps, then 200),
  ``/stall/<seconds>`` (200 and headers at once, the body after the stall),
  ``/redirect?to=<location>`` (302), anything else 200.
- With ``reject_unverified`` (default) a request failing verification gets 401 before any
  script runs (it is still recorded).

Run it alone for ``make run``: ``python -m streams.testing.webhook_receiver --port 8099``
(secret from ``STREAMS_WEBHOOK_SIGNING_SECRET``); it prints one JSON line per delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from streams.jobs import signing
from streams.testing.serve import serve

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    delay_s: float = 0.0  # before answering
    stall_s: float = 0.0  # after sending status and headers, before the body


@dataclass(frozen=True)
class Delivery:
    """One request as received."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive lookups: use ``header()``
    body: bytes
    verified: bool
    verify_error: str | None
    status: int  # what the receiver answered
    received_at_s: float

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


OnDelivery = Callable[[Delivery], None]


class WebhookReceiver:
    """``async with WebhookReceiver(["secret"]) as receiver: ... receiver.url + "/hook"``."""

    def __init__(
        self,
        secrets: str | Sequence[str] | Mapping[str, Sequence[str]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tolerance_s: float = signing.DEFAULT_TOLERANCE_S,
        reject_unverified: bool = True,
        clock: Callable[[], float] = time.time,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        if isinstance(secrets, Mapping):
            self._by_subscription = {sub: list(keys) for sub, keys in secrets.items()}
            self._secrets: list[str] = []
        else:
            self._by_subscription = {}
            self._secrets = [secrets] if isinstance(secrets, str) else list(secrets)
        every = [self._secrets, *self._by_subscription.values()]
        if not any(every) or not all(all(keys) for keys in every):
            raise ValueError("WebhookReceiver needs at least one non-empty secret")
        self._host = host
        self._port = port
        self._tolerance_s = tolerance_s
        self._reject_unverified = reject_unverified
        self._clock = clock
        self._on_delivery = on_delivery
        self._scripts: dict[str, list[Reply]] = {}
        self._calls: defaultdict[str, int] = defaultdict(int)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self.deliveries: list[Delivery] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 = a free port; see ``url``)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gave up (timeout) ends its slow handler
        self._runner, self._bound_port = await serve(
            app, self._host, self._port, handler_cancellation=True
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        if self._bound_port is None:
            raise RuntimeError("WebhookReceiver not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._bound_port}"

    # --- scripting and inspection ------------------------------------------------------------

    def script(self, path: str, replies: Iterable[Reply | int]) -> None:
        """Answer requests to ``path`` with ``replies`` in order; the last one repeats."""
        items = [r if isinstance(r, Reply) else Reply(status=r) for r in replies]
        if not items:
            raise ValueError("script needs at least one reply")
        self._scripts[path] = items
        self._calls[path] = 0

    def deliveries_to(self, path: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == path]

    def clear(self) -> None:
        self.deliveries.clear()
        self._calls.clear()

    # --- serving ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        verified, error = self._verify(request, body)
        path = request.path
        call = self._calls[path]
        self._calls[path] = call + 1
        if not verified and self._reject_unverified:
            reply = Reply(status=401, body=f"signature rejected: {error}")
        else:
            reply = self._reply_for(request, call)
        delivery = Delivery(
            method=request.method,
            path=path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            verified=verified,
            verify_error=error,
            status=reply.status,
            received_at_s=self._clock(),
        )
        self.deliveries.append(delivery)
        if self._on_delivery is not None:
            self._on_delivery(delivery)
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        if reply.stall_s <= 0:
            return web.Response(status=reply.status, headers=dict(reply.headers), text=reply.body)
        response = web.StreamResponse(status=reply.status, headers=dict(reply.headers))
        await response.prepare(request)  # status and headers go out now
        await asyncio.sleep(reply.stall_s)
        await response.write(reply.body.encode())
        await response.write_eof()
        return response

    def _verify(self, request: web.Request, body: bytes) -> tuple[bool, str | None]:
        subscription = request.headers.get(signing.SUBSCRIPTION_HEADER, "")
        secrets = self._by_subscription.get(subscription, self._secrets)
        if not secrets:
            return False, "unknown subscription"
        try:
            signing.verify_request(
                request.headers,
                body,
                url=str(request.url),
                secrets=secrets,
                now_s=self._clock(),
                tolerance_s=self._tolerance_s,
            )
        except signing.SignatureError as exc:
            return False, str(exc)
        return True, None

    def _reply_for(self, request: web.Request, call: int) -> Reply:
        path = request.path
        script = self._scripts.get(path)
        if script is not None:
            return script[min(call, len(script) - 1)]
        return builtin_reply(path, request.query, call)


def builtin_reply(path: str, query: Mapping[str, str], call: int) -> Reply:
    """The answer of a built-in path (module docstring) to its ``call``-th request (0-based)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) == 2 and parts[0] == "fail":
        statuses = _parse_sequence(parts[1])
        if statuses:
            status = statuses[min(call, len(statuses) - 1)]
            headers: dict[str, str] = {}
            if "retry_after" in query and not 200 <= status < 300:
                headers["Retry-After"] = query["retry_after"]
            if "location" in query:
                headers["Location"] = query["location"]
            return Reply(status=status, headers=headers, body=query.get("body", f"status {status}"))
    if len(parts) == 2 and parts[0] == "slow":
        with contextlib.suppress(ValueError):
            return Reply(status=200, body="slow ok", delay_s=max(0.0, float(parts[1])))
    if len(parts) == 2 and parts[0] == "stall":
        with contextlib.suppress(ValueError):
            return Reply(status=200, body="stalled ok", stall_s=max(0.0, float(parts[1])))
    if parts == ["redirect"]:
        return Reply(status=302, headers={"Location": query.get("to", "/landed")})
    return Reply(status=200, body="ok")


def _parse_sequence(text: str) -> list[int]:
    """``"503-then-200"`` -> [503, 200]; [] when malformed."""
    try:
        statuses = [int(part) for part in text.split("-then-")]
    except ValueError:
        return []
    return statuses if all(100 <= s <= 599 for s in statuses) else []


# --- the demo entry point ----------------------------------------------------------------


def _print_delivery(delivery: Delivery) -> None:
    record = {
        "path": delivery.path,
        "status": delivery.status,
        "verified": delivery.verified,
        "verify_error": delivery.verify_error,
        "event_id": delivery.header("X-Streams-Event-Id"),
        "event_name": delivery.header("X-Streams-Event-Name"),
        "bytes": len(delivery.body),
    }
    print(json.dumps(record), flush=True)


async def _serve(host: str, port: int, secrets: list[str]) -> None:
    receiver = WebhookReceiver(secrets, host=host, port=port, on_delivery=_print_delivery)
    async with receiver:
        print(f"webhook receiver listening on {receiver.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m streams.testing.webhook_receiver [--host H] [--port P] [--secret S]``."""
    parser = argparse.ArgumentParser(description="Local webhook receiver (verifies signatures)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument(
        "--secret",
        action="append",
        help="signing secret (repeat for rotation); default STREAMS_WEBHOOK_SIGNING_SECRET",
    )
    args = parser.parse_args(argv)
    secrets = args.secret
    if not secrets:
        from streams.jobs.webhook import WebhookSettings

        configured = WebhookSettings().webhook_signing_secret
        if configured is None:
            parser.error("give --secret or set STREAMS_WEBHOOK_SIGNING_SECRET")
        secrets = [configured.get_secret_value()]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, secrets))


if __name__ == "__main__":
    main()
