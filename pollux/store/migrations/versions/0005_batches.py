"""Batch jobs and their per-request results.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("project_id", sa.String, sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("display_name", sa.String, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("input_file", sa.String),
        sa.Column("request_count", sa.Integer, nullable=False),
        sa.Column("priority", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("options", sa.JSON),
        sa.Column("output_file", sa.String),
        sa.Column("error", sa.JSON),
        sa.Column("cancel_requested", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ending", sa.String),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True)),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_batches_list", "batches", ["project_id", "create_time"])
    op.create_index("ix_batches_expire_time", "batches", ["expire_time"])
    op.create_table(
        "batch_results",
        sa.Column("project_id", sa.String, primary_key=True),
        sa.Column("batch_id", sa.String, primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("ok", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("batch_results")
    op.drop_index("ix_batches_expire_time", "batches")
    op.drop_index("ix_batches_list", "batches")
    op.drop_table("batches")
