"""The store's settings, shared by every job that keeps rows in the SQL store.

``STREAMS_DATABASE_URL`` selects the database: unset, a SQLite file ``streams.db`` under
``STREAMS_HOME`` (so a laptop needs no server); in production a PostgreSQL DSN
(``postgresql://user:pass@host:5432/db``). Plain ``sqlite://`` and ``postgresql://`` URLs
get the async drivers (aiosqlite, asyncpg); a synchronous driver is refused.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from streams.errors import ConfigError
from streams.jobs.base import JobSettings
from streams.settings import _default_path

SQLITE_FILE_NAME = "streams.db"
_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_ALIASES = {"postgres": "postgresql"}


class StoreSettings(JobSettings):
    """``STREAMS_DATABASE_URL`` and the store's pool and timeout bounds."""

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset = SQLite file under STREAMS_HOME"
    )
    home: Path = Field(default_factory=lambda: _default_path(".streams"))
    db_timeout_s: float = Field(
        default=10.0, gt=0, description="bound of every database call (and transaction)"
    )
    db_connect_timeout_s: float = Field(default=10.0, gt=0)
    db_pool_size: int = Field(default=5, ge=1, le=100)
    db_pool_max_overflow: int = Field(default=5, ge=0, le=100)

    def resolved_url(self) -> URL:
        """The database URL with its async driver; raises ConfigError for a bad URL."""
        if not self.database_url:
            return make_url(f"sqlite+aiosqlite:///{self.home / SQLITE_FILE_NAME}")
        return async_url(self.database_url)


def async_url(text: str) -> URL:
    """``text`` as a SQLAlchemy URL using the async driver of its database.

    Raises ConfigError for an unparsable URL, a database other than SQLite or PostgreSQL,
    or a synchronous driver (``postgresql+psycopg2``).
    """
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise ConfigError(f"STREAMS_DATABASE_URL is not a database URL: {exc}") from None
    backend = _ALIASES.get(url.get_backend_name(), url.get_backend_name())
    wanted = _ASYNC_DRIVERS.get(backend)
    if wanted is None:
        raise ConfigError(
            f"STREAMS_DATABASE_URL: unsupported database {backend!r} (use sqlite or postgresql)"
        )
    driver = url.get_driver_name() if "+" in url.drivername else wanted
    if driver != wanted:
        raise ConfigError(
            f"STREAMS_DATABASE_URL: driver {driver!r} is not supported for {backend}; "
            f"use {backend}+{wanted}:// (or plain {backend}://)"
        )
    return url.set(drivername=f"{backend}+{wanted}")
