"""sample application schema: the tables seed 001's retention policies point at

Revision ID: s001_sample_app
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s001_sample_app"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_MS = sa.BigInteger


def _table(name: str, *columns: sa.Column, ts: str = "created_at_ms") -> None:  # type: ignore[type-arg]
    op.create_table(name, sa.Column("id", _ID, primary_key=True), *columns)
    op.create_index(f"ix_{name}_{ts}", name, [ts])


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at_ms", _MS, nullable=False),
        sa.Column("last_active_at_ms", _MS, nullable=False),
        sa.Column("deletion_notice_at_ms", _MS, nullable=True),
    )
    op.create_index("ix_accounts_last_active_at_ms", "accounts", ["last_active_at_ms"])
    _table(
        "orders",
        sa.Column("account_id", sa.String(64), nullable=True, index=True),
        sa.Column("customer_name", sa.String(200), nullable=True),
        sa.Column("customer_email", sa.String(254), nullable=True),
        sa.Column("shipping_address", sa.Text, nullable=True),
        sa.Column("total_cents", sa.BigInteger, nullable=False),
        sa.Column("created_at_ms", _MS, nullable=False),
        sa.Column("anonymized_at_ms", _MS, nullable=True),
    )
    _table(
        "chat_messages",
        sa.Column("sender_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("is_read", sa.Boolean, nullable=False),
        sa.Column("created_at_ms", _MS, nullable=False),
    )
    _table(
        "sessions",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("created_at_ms", _MS, nullable=False),
        sa.Column("last_activity_at_ms", _MS, nullable=False),
        ts="last_activity_at_ms",
    )
    _table(
        "refresh_tokens",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("created_at_ms", _MS, nullable=False),
        sa.Column("expires_at_ms", _MS, nullable=False),
        ts="expires_at_ms",
    )
    _table(
        "audit_logs",
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("created_at_ms", _MS, nullable=False),
    )
    _table(
        "notifications",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("is_read", sa.Boolean, nullable=False),
        sa.Column("created_at_ms", _MS, nullable=False),
    )
    _table(
        "payment_records",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("created_at_ms", _MS, nullable=False),
        sa.Column("archived_at_ms", _MS, nullable=True),
    )


def downgrade() -> None:
    for name in (
        "payment_records",
        "notifications",
        "audit_logs",
        "refresh_tokens",
        "sessions",
        "chat_messages",
        "orders",
        "accounts",
    ):
        op.drop_table(name)
