"""The SQL store: SQLAlchemy 2 Core over async drivers, Alembic migrations in the package.

- ``StoreSettings``: ``STREAMS_DATABASE_URL`` (default: SQLite under ``STREAMS_HOME``) and
  the pool/timeout bounds, a ``JobSettings`` a store job's settings class inherits;
- ``Database``: the pooled engine; ``async with db.transaction() as conn:`` is one bounded
  transaction whose errors leave as ``Retryable``/``Permanent``; ``await db.migrate()``;
- ``GroupCommitter``: many concurrent handlers, one transaction;
- ``schema.metadata``: the tables; ``classify_db_error``/``is_unique_violation``.
"""

from streams.store.batch import GroupCommitter
from streams.store.database import Database, database_from_settings
from streams.store.errors import classify_db_error, is_unique_violation, sqlstate
from streams.store.settings import StoreSettings, async_url

__all__ = [
    "Database",
    "GroupCommitter",
    "StoreSettings",
    "async_url",
    "classify_db_error",
    "database_from_settings",
    "is_unique_violation",
    "sqlstate",
]
