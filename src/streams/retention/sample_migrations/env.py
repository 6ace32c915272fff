"""Alembic environment of the sample application schema (its own version table)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run through streams.retention.sample.migrate_sample")

context.configure(
    connection=connection,
    version_table="sample_app_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
