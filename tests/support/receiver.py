"""The aiohttp webhook receiver on an event loop of its own thread, for synchronous tests."""

from __future__ import annotations

import asyncio
import threading

from streams.testing.webhook_receiver import WebhookReceiver


class ThreadedReceiver:
    """``with ThreadedReceiver(secret) as receiver: ... receiver.url + "/hook"``."""

    def __init__(self, secret: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.receiver = WebhookReceiver([secret])
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self.loop).result(10)
        return self.receiver

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
