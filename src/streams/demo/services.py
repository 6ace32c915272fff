"""The demo's peers, in this process: an SMTP catcher and a webhook receiver.

Both run in background threads, write one JSON line per message or delivery to a log
file, and remember which event ids they saw succeed, so ``streams up`` can check the
worker's metrics against what really arrived.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO, Any

from streams.testing.smtp import ReceivedMail, RecordingSMTPServer
from streams.testing.webhook_receiver import Delivery, WebhookReceiver

DEV_MODE_SECRETS = ("STREAMS_UNSUBSCRIBE_SECRET",)  # the webhook secret: the runner's own


def enter_dev_mode(environ: MutableMapping[str, str]) -> None:
    """Mark ``environ`` as the local demo (``STREAMS_DEV_MODE=true``, inherited by the
    worker) and give every unset secret a random per-run value; set ones are kept."""
    environ["STREAMS_DEV_MODE"] = "true"
    for name in DEV_MODE_SECRETS:
        if not environ.get(name):
            environ[name] = secrets.token_urlsafe(24)
    if not environ.get("STREAMS_PROVIDER_WEBHOOK_SECRETS"):  # the API's webhook route
        webhook_secret = "whsec_" + secrets.token_urlsafe(24)
        environ["STREAMS_PROVIDER_WEBHOOK_SECRETS"] = json.dumps({"stripe": [webhook_secret]})
    if not environ.get("STREAMS_ENCRYPTION_KEYS"):  # sensitive fields (device tokens)
        environ["STREAMS_ENCRYPTION_KEYS"] = "dev=" + secrets.token_urlsafe(32)


class _JsonLines:
    """Append-only JSON lines, thread-safe."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class SMTPCatcher(RecordingSMTPServer):
    """Accepts every message except: ``reject`` addresses get ``550 5.1.1`` at RCPT, and
    ``greylist`` addresses get ``451 4.7.1`` on their first RCPT only (like a greylisting
    server), then are accepted."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        log_path: Path,
        reject: tuple[str, ...] = (),
        greylist: tuple[str, ...] = (),
    ) -> None:
        super().__init__(host, port, reject_recipients=reject)
        self.greylist = frozenset(a.lower() for a in greylist)
        self._greylisted: set[str] = set()
        self._lock = threading.Lock()
        self._log = _JsonLines(log_path)
        self.accepted_ids: set[str] = set()

    def _rcpt_reply(self, address: str) -> str | None:
        lowered = address.lower()
        if lowered in self.greylist:
            with self._lock:
                first = lowered not in self._greylisted
                self._greylisted.add(lowered)
            if first:
                return f"451 4.7.1 <{address}>: Recipient address rejected: Greylisted, try later"
        return super()._rcpt_reply(address)

    def _on_message(self, mail: ReceivedMail) -> None:
        msg = mail.message
        event_id = msg["X-Streams-Event-Id"]
        with self._lock:
            if event_id:
                self.accepted_ids.add(str(event_id))
        self._log.write(
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "to": list(mail.rcpt_tos),
                "subject": msg["Subject"],
                "language": msg["Content-Language"],
                "message_id": msg["Message-ID"],
                "event_id": event_id,
                "bytes": len(mail.raw),
            }
        )

    @property
    def log_path(self) -> Path:
        return self._log.path

    def accepted(self) -> set[str]:
        with self._lock:
            return set(self.accepted_ids)

    def stop(self) -> None:
        super().stop()
        self._log.close()


class ReceiverThread:
    """A ``WebhookReceiver`` on its own event loop in a daemon thread."""

    def __init__(self, secret: str, host: str, port: int, *, log_path: Path) -> None:
        self._log = _JsonLines(log_path)
        self._lock = threading.Lock()
        self.ok_ids: set[str] = set()
        self.receiver = WebhookReceiver(secret, host=host, port=port, on_delivery=self._on_delivery)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.receiver.url

    @property
    def log_path(self) -> Path:
        return self._log.path

    def start(self, timeout_s: float = 10.0) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.receiver.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.receiver.stop())
                loop.close()

        thread = threading.Thread(target=run, name="streams-up-webhook-receiver", daemon=True)
        thread.start()
        if not started.wait(timeout_s):
            raise RuntimeError(f"the webhook receiver did not start within {timeout_s:g}s")
        if failure:
            raise failure[0]
        self._loop, self._thread = loop, thread

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
        self._log.close()

    def _on_delivery(self, delivery: Delivery) -> None:
        event_id = delivery.header("X-Streams-Event-Id")
        if event_id and 200 <= delivery.status < 300:
            with self._lock:
                self.ok_ids.add(event_id)
        self._log.write(
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "path": delivery.path,
                "status": delivery.status,
                "verified": delivery.verified,
                "verify_error": delivery.verify_error,
                "event_id": event_id,
                "event_name": delivery.header("X-Streams-Event-Name"),
                "bytes": len(delivery.body),
            }
        )

    def delivered(self) -> set[str]:
        with self._lock:
            return set(self.ok_ids)
