"""Alembic environment: runs on the connection ``streams.store.migrate`` passes in."""

from __future__ import annotations

from alembic import context

from streams.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through streams.store.migrate (streams store migrate)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
