"""Uploaded files and resumable upload sessions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("project_id", sa.String, sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("display_name", sa.String, nullable=False),
        sa.Column("mime_type", sa.String, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("error", sa.String),
        sa.Column("info", sa.JSON),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_files_expire_time", "files", ["expire_time"])
    op.create_table(
        "uploads",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("project_id", sa.String, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("file_id", sa.String, nullable=False),
        sa.Column("display_name", sa.String, nullable=False),
        sa.Column("mime_type", sa.String, nullable=False),
        sa.Column("declared_size", sa.BigInteger),
        sa.Column("committed", sa.BigInteger, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_uploads_project", "uploads", ["project_id"])


def downgrade() -> None:
    op.drop_index("ix_uploads_project", "uploads")
    op.drop_table("uploads")
    op.drop_index("ix_files_expire_time", "files")
    op.drop_table("files")
