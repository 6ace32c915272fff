"""The store's tables (SQLAlchemy Core), one ``metadata`` for every job.

A job's tables are declared here or in the job's own module on this ``metadata``; the
migration that creates them lives in ``migrations/versions`` (the schema is never created
from the metadata directly: migrations are the only way a database changes).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A 64-bit id that is SQLite's rowid alias (only INTEGER PRIMARY KEY is).
RowId = BigInteger().with_variant(Integer(), "sqlite")
HASH_CHARS = 64  # SHA-256, hex

audit_records = Table(
    "audit_records",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("tenant_id", String(256), nullable=True),
    Column("subject_id", String(256), nullable=False),
    Column("actor_id", String(256), nullable=False),
    Column("occurred_at_ms", BigInteger, nullable=False),
    Column("recorded_at_ms", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(HASH_CHARS), nullable=False),
    Column("hash", String(HASH_CHARS), nullable=False),
    UniqueConstraint("event_id"),
    UniqueConstraint("subject_id", "seq"),
    Index(None, "tenant_id", "occurred_at_ms"),
    Index(None, "actor_id", "occurred_at_ms"),
    Index(None, "occurred_at_ms"),
)
"""One row per audit event; ``seq``/``prev_hash``/``hash`` chain each subject's rows."""

audit_chain_heads = Table(
    "audit_chain_heads",
    metadata,
    Column("subject_id", String(256), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(HASH_CHARS), nullable=False),
    Column("updated_at_ms", BigInteger, nullable=False),
)
"""The last link of each subject's chain: finds the tail fast, and shows a deleted tail."""

# Retention runs (issue 11): one row per (run, rule), updated in the same transaction as
# each batch, so a redelivered run resumes and its counts are exact (retention/engine.py).
retention_runs = Table(
    "retention_runs",
    metadata,
    Column("run_id", String(200), primary_key=True),
    Column("rule", String(64), primary_key=True),
    Column("policy", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("batches", BigInteger, nullable=False),
    Column("deleted", BigInteger, nullable=False),
    Column("archived", BigInteger, nullable=False),
    Column("anonymized", BigInteger, nullable=False),
    Column("notified", BigInteger, nullable=False),
    Column("children_anonymized", BigInteger, nullable=False),
    Column("files", BigInteger, nullable=False),
    Column("started_at_ms", BigInteger, nullable=False),
    Column("finished_at_ms", BigInteger, nullable=True),
)
