"""``streams store migrate``: bring the SQL store's schema to this version's newest."""

from __future__ import annotations

import asyncio
import sys

import click
from pydantic import ValidationError

from streams.errors import ConfigError, HandlerError


@click.group("store")
def store() -> None:
    """The SQL store (STREAMS_DATABASE_URL; default a SQLite file under STREAMS_HOME)."""


@store.command("migrate")
def migrate() -> None:
    """Run the pending migrations (jobs also do it when they start)."""
    from streams.store.database import Database
    from streams.store.settings import StoreSettings

    try:
        settings = StoreSettings()
    except ValidationError as exc:
        raise ConfigError(f"invalid STREAMS_* store settings: {exc}") from None

    async def run() -> tuple[str, str | None]:
        db = Database.from_settings(settings)
        try:
            return db.describe(), await db.migrate()
        finally:
            await db.dispose()

    try:
        url, revision = asyncio.run(run())
    except HandlerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"store {url}: at revision {revision}")
