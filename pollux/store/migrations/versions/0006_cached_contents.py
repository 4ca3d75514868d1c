"""Context caches (`cachedContents`).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cached_contents",
        sa.Column("project_id", sa.String, sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("display_name", sa.String, nullable=False),
        sa.Column("token_count", sa.Integer, nullable=False),
        sa.Column("token_details", sa.JSON),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("files", sa.JSON),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cached_contents_list", "cached_contents", ["project_id", "create_time"])
    op.create_index("ix_cached_contents_expire_time", "cached_contents", ["expire_time"])


def downgrade() -> None:
    op.drop_index("ix_cached_contents_expire_time", "cached_contents")
    op.drop_index("ix_cached_contents_list", "cached_contents")
    op.drop_table("cached_contents")
