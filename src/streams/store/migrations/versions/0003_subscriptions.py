"""money: cancelled subscriptions (renewals stop), provider webhook ids seen (replays refused)

Revision ID: 0003_subscriptions
Revises: 0002_analytics
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_subscriptions"
down_revision = "0002_analytics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_cancellations",
        sa.Column("subscription_id", sa.String(256), nullable=False),
        sa.Column("cancelled_at_ms", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name="pk_subscription_cancellations"),
    )
    op.create_table(
        "provider_webhook_events",
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("provider_event_id", sa.String(256), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("provider", "provider_event_id", name="pk_provider_webhook_events"),
    )


def downgrade() -> None:
    op.drop_table("provider_webhook_events")
    op.drop_table("subscription_cancellations")
