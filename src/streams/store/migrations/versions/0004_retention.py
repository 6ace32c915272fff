"""retention: per-run, per-rule progress of the retention engine

Revision ID: 0004_retention
Revises: 0003_subscriptions
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_retention"
down_revision = "0003_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_runs",
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *[
            sa.Column(c, sa.BigInteger, nullable=False)
            for c in (
                "batches",
                "deleted",
                "archived",
                "anonymized",
                "notified",
                "children_anonymized",
                "files",
                "started_at_ms",
            )
        ],
        sa.Column("finished_at_ms", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("run_id", "rule", name="pk_retention_runs"),
    )


def downgrade() -> None:
    op.drop_table("retention_runs")
