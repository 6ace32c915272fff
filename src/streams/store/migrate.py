"""Alembic migrations shipped inside the package, run programmatically.

Jobs migrate at start (``Database.migrate``) and operators with ``streams store migrate``;
both run Alembic's ``upgrade head`` on one of the store's own async connections (through
``run_sync``), in one transaction that first takes a lock, so workers starting together
migrate once: PostgreSQL ``pg_advisory_xact_lock``, SQLite ``BEGIN IMMEDIATE``.

A new table ships as a revision file in ``migrations/versions`` whose ``down_revision``
is the current head (``alembic heads`` must stay single).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from streams.store.database import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x53_54_52_4D  # "STRM": the advisory lock serialising migrations


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (and ``connection``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest revision shipped with this version of streams."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> str | None:
    command.upgrade(alembic_config(connection), "head")
    return _current(connection)


async def upgrade(db: Database) -> str | None:
    """Run every pending migration on ``db``; returns the current revision (the head).
    Raises Retryable or Permanent (``store.errors``) when the database fails."""
    async with db.transaction(timeout_s=max(db.timeout_s, 60.0)) as conn:
        if db.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        return await conn.run_sync(_upgrade)


async def current_revision(db: Database) -> str | None:
    """The revision the database is at (None before the first migration)."""
    async with db.transaction(write=False) as conn:
        return await conn.run_sync(_current)
