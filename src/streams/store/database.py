"""The SQL store's connection pool: SQLAlchemy 2 Core over asyncio drivers.

Every call runs on the event loop without blocking it (aiosqlite runs SQLite in its own
thread, asyncpg is native asyncio), through a bounded pool, inside a deadline
(``timeout_s``: an ``asyncio.timeout`` around the whole transaction, backed by the server's
``statement_timeout`` on PostgreSQL and the busy timeout on SQLite). Errors leave
``transaction`` already classified as ``Retryable`` or ``Permanent`` (``store.errors``).

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed transaction survives a
killed process (not a power cut). pysqlite's implicit transactions are replaced by explicit
ones so that a write transaction takes the write lock when it starts (``BEGIN IMMEDIATE``)
and two writers queue on the busy timeout instead of failing halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from streams.errors import HandlerError
from streams.store.errors import classify_db_error
from streams.store.settings import StoreSettings, async_url

_WRITE = "streams_write"


class Database:
    """A pooled async engine with bounded, classified transactions.

    ``url``: a SQLAlchemy URL (or text) for sqlite+aiosqlite or postgresql+asyncpg.
    ``timeout_s`` bounds every transaction; ``pool_size`` + ``max_overflow`` bound the
    connections; waiting for a free connection is bounded by ``timeout_s`` too.
    """

    def __init__(
        self,
        url: URL | str,
        *,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        pool_size: int = 5,
        max_overflow: int = 5,
    ) -> None:
        self.url = async_url(url) if isinstance(url, str) else url
        self.timeout_s = timeout_s
        self.engine: AsyncEngine = _create_engine(
            self.url, timeout_s, connect_timeout_s, pool_size, max_overflow
        )

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> Database:
        return cls(
            settings.resolved_url(),
            timeout_s=settings.db_timeout_s,
            connect_timeout_s=settings.db_connect_timeout_s,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_max_overflow,
        )

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.url.get_backend_name()

    def describe(self) -> str:
        """The URL with its password hidden (for logs and CLI output)."""
        return self.url.render_as_string(hide_password=True)

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, timeout_s: float | None = None, write: bool = True
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction on a pooled connection, committed when the block exits normally.

        The whole block (waiting for a connection included) must finish within
        ``timeout_s`` (default: the database's). ``write=False`` starts a read-only style
        transaction (SQLite: a deferred ``BEGIN``, no write lock). Database errors and the
        timeout leave as Retryable or Permanent; other exceptions pass through unchanged.
        """
        try:
            async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                async with self.engine.connect() as conn:
                    await conn.execution_options(**{_WRITE: write})
                    async with conn.begin():
                        yield conn
        except HandlerError:
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise classify_db_error(exc) from exc

    async def migrate(self) -> str | None:
        """Bring the schema to the newest migration; returns the revision now current."""
        from streams.store.migrate import upgrade

        return await upgrade(self)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _create_engine(
    url: URL, timeout_s: float, connect_timeout_s: float, pool_size: int, max_overflow: int
) -> AsyncEngine:
    pool: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": timeout_s,
        "pool_pre_ping": True,
    }
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": timeout_s}, **pool)
        _sqlite_explicit_transactions(engine, timeout_s)
        return engine
    timeout_ms = round(timeout_s * 1000)
    connect_args = {
        "timeout": connect_timeout_s,
        "command_timeout": timeout_s,
        "server_settings": {
            "application_name": "streams",
            "statement_timeout": str(timeout_ms),
            "lock_timeout": str(timeout_ms),
            "idle_in_transaction_session_timeout": str(timeout_ms * 6),
        },
    }
    return create_async_engine(url, connect_args=connect_args, **pool)


def _sqlite_explicit_transactions(engine: AsyncEngine, timeout_s: float) -> None:
    busy_ms = round(timeout_s * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            f"busy_timeout={busy_ms}",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def database_from_settings(settings: StoreSettings | None = None) -> Database:
    """The store's ``Database`` from ``settings`` (default: read from the environment)."""
    return Database.from_settings(settings if settings is not None else StoreSettings())
