"""analytics: daily event counts, review ratings, subject averages, rollup runs

Revision ID: 0002_analytics
Revises: 0001_audit
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_analytics"
down_revision = "0001_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "analytics_daily_event_counts",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("scope", sa.String(256), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "scope", "family", "event_type", "outcome",
            name="pk_analytics_daily_event_counts",
        ),
    )  # fmt: skip
    op.create_table(
        "analytics_review_ratings",
        sa.Column("scope", sa.String(256), nullable=False),
        sa.Column("review_id", sa.String(256), nullable=False),
        sa.Column("subject_id", sa.String(256), nullable=False),
        sa.Column("rating", sa.Integer, nullable=False),
        sa.Column("reviewed_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("scope", "review_id", name="pk_analytics_review_ratings"),
    )
    op.create_index(
        "ix_analytics_review_ratings_scope_subject_id",
        "analytics_review_ratings",
        ["scope", "subject_id"],
    )
    op.create_table(
        "analytics_subject_ratings",
        sa.Column("scope", sa.String(256), nullable=False),
        sa.Column("subject_id", sa.String(256), nullable=False),
        sa.Column("reviews", sa.Integer, nullable=False),
        sa.Column("rating_sum", sa.BigInteger, nullable=False),
        sa.Column("average", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("scope", "subject_id", name="pk_analytics_subject_ratings"),
    )
    op.create_table(
        "analytics_rollup_runs",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("scope", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("finished_at_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("day", "scope", "kind", name="pk_analytics_rollup_runs"),
    )


def downgrade() -> None:
    op.drop_table("analytics_rollup_runs")
    op.drop_table("analytics_subject_ratings")
    op.drop_index("ix_analytics_review_ratings_scope_subject_id", "analytics_review_ratings")
    op.drop_table("analytics_review_ratings")
    op.drop_table("analytics_daily_event_counts")
