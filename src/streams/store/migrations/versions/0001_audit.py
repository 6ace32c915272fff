"""audit records and their per-subject hash-chain heads

Revision ID: 0001_audit
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_audit"
down_revision = None
branch_labels = None
depends_on = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(256), nullable=True),
        sa.Column("subject_id", sa.String(256), nullable=False),
        sa.Column("actor_id", sa.String(256), nullable=False),
        sa.Column("occurred_at_ms", sa.BigInteger, nullable=False),
        sa.Column("recorded_at_ms", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_records"),
        sa.UniqueConstraint("event_id", name="uq_audit_records_event_id"),
        sa.UniqueConstraint("subject_id", "seq", name="uq_audit_records_subject_id_seq"),
    )
    op.create_index(
        "ix_audit_records_tenant_id_occurred_at_ms",
        "audit_records",
        ["tenant_id", "occurred_at_ms"],
    )
    op.create_index(
        "ix_audit_records_actor_id_occurred_at_ms", "audit_records", ["actor_id", "occurred_at_ms"]
    )
    op.create_index("ix_audit_records_occurred_at_ms", "audit_records", ["occurred_at_ms"])
    op.create_table(
        "audit_chain_heads",
        sa.Column("subject_id", sa.String(256), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("subject_id", name="pk_audit_chain_heads"),
    )


def downgrade() -> None:
    op.drop_table("audit_chain_heads")
    op.drop_table("audit_records")
