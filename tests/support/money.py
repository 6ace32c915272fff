"""The money rig: the payment provider on its own thread, the SMTP catcher, topics for the
money families and real worker processes running the built-in jobs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.core import headers as h
from streams.publish.publisher import Publisher
from streams.settings import Settings
from streams.testing.payment_provider import PaymentProvider
from streams.testing.smtp import RecordingSMTPServer
from tests.support.engine import WorkerProcess, provision, read_topic, record_headers
from tests.support.engine import write_catalog as _write_catalog

API_KEY = "sk_test_money"
WEBHOOK_SECRET = "whsec_test_money"
RETRY = {"delays": ["1s", "2s"], "max_attempts": 4, "jitter": 0.0, "retention": "1d"}


def family(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partitions": 3,
        "concurrency": 16,
        "handler_timeout": "10s",
        "retry": RETRY,
        "circuit_breaker": {"failure_threshold": 1000, "cooldown": "2s"},
    }
    body.update(over)
    return body


class ThreadedProvider:
    """``with ThreadedProvider() as provider: ... provider.url``; state read across threads."""

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.provider = PaymentProvider(api_key=API_KEY, **kwargs)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PaymentProvider:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.provider.start(), self.loop).result(10)
        return self.provider

    def run(self, coro: Any, timeout_s: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.provider.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class MoneyRig:
    """Topics for ``families`` (overrides per family), a publisher, worker processes."""

    def __init__(
        self,
        make_settings: Callable[..., Settings],
        tmp: Path,
        families: dict[str, dict[str, Any]],
        env: dict[str, str],
    ) -> None:
        self.settings = make_settings(catalog_path=_write_catalog(tmp, families))
        self.catalog = provision(self.settings)
        self.families = families
        self.tmp = tmp
        self.env = env
        self.workers: list[WorkerProcess] = []
        self.publisher = Publisher(self.settings, catalog=self.catalog)

    def start(self, families: list[str], worker_id: str = "w1") -> WorkerProcess:
        w = WorkerProcess(
            self.settings,
            families,
            self.tmp / "unused.db",
            self.tmp / f"{worker_id}-{len(self.workers)}.log",
            worker_id=worker_id,
            extra_env=self.env,
            handlers="streams.jobs.registry",
            builtin_jobs=True,
        )
        self.workers.append(w.start())
        w.wait_ready(90)
        return w

    def topic(self, name: str) -> list[Any]:
        fam = name.split(".")[0]
        return read_topic(
            self.settings,
            f"{self.settings.topic_prefix}{name}",
            self.catalog.family(fam).partitions,
        )

    def events(self, name: str, event_type: str | None = None) -> list[dict[str, str]]:
        """Headers of the records of topic ``name`` (of ``event_type`` when given)."""
        out = [record_headers(m) for m in self.topic(name)]
        return [x for x in out if event_type is None or x.get(h.EVENT_TYPE) == event_type]

    def close(self) -> None:
        self.publisher.close()
        for w in self.workers:
            w.stop()


def money_env(provider: PaymentProvider, smtp: RecordingSMTPServer, home: Path) -> dict[str, str]:
    return {
        "STREAMS_PAYMENT_API_BASE": provider.url,
        "STREAMS_PAYMENT_API_KEY": API_KEY,
        "STREAMS_PAYMENT_TIMEOUT_S": "5",
        "STREAMS_PAYMENT_ADMIN_EMAIL": "admin@example.com",
        "STREAMS_SMTP_PORT": str(smtp.port),
        "STREAMS_SMTP_HOST": "127.0.0.1",
        "STREAMS_UNSUBSCRIBE_SECRET": "unsub-secret",
        "STREAMS_UNSUBSCRIBE_BASE_URL": "https://example.com/unsubscribe",
        "STREAMS_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'money.db'}",
    }


class ThreadedApi:
    """The provider webhook route on an aiohttp app of its own thread (the API's access and
    problem middlewares, a real Publisher, a SQLite store)."""

    def __init__(self, settings: Settings, publisher: Publisher, db_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.settings = settings
        self.publisher = publisher
        self.db_url = db_url
        self.url = ""
        self._runner: Any = None
        self._db: Any = None

    async def _start(self) -> None:
        from aiohttp import web
        from pydantic import SecretStr

        from streams.api import provider_routes
        from streams.api.access import AUTHENTICATOR, authorize
        from streams.api.auth import Authenticator
        from streams.api.problems import problems
        from streams.api.state import DATABASE, PUBLISHER
        from streams.store.database import Database

        app = web.Application(middlewares=[problems, authorize])
        app[AUTHENTICATOR] = Authenticator(jwt=None, keys=None)  # no credential accepted
        app[provider_routes.WEBHOOK_SETTINGS] = provider_routes.ProviderWebhookSettings(
            provider_webhook_secrets={"stripe": [SecretStr(WEBHOOK_SECRET)]},
            provider_webhook_tolerance_s=300,
        )
        self._db = Database(self.db_url)
        await self._db.migrate()
        app[DATABASE] = self._db
        app[PUBLISHER] = self.publisher
        provider_routes.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> ThreadedApi:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._db.dispose()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
