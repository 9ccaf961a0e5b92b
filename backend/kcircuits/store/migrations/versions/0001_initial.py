"""Initial schema: results, views, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "results",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("method", sa.String(32), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("saved", sa.Boolean(), nullable=False),
        sa.Column("title", sa.String(200), nullable=True),
    )
    op.create_index("ix_results_created_at", "results", ["created_at"])
    op.create_index("ix_results_model", "results", ["model"])
    op.create_index("ix_results_kind", "results", ["kind"])
    op.create_table(
        "views",
        sa.Column("short", sa.String(16), primary_key=True),
        sa.Column("result_id", sa.String(64), sa.ForeignKey("results.id"), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("result_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("views")
    op.drop_index("ix_results_kind", "results")
    op.drop_index("ix_results_model", "results")
    op.drop_index("ix_results_created_at", "results")
    op.drop_table("results")
