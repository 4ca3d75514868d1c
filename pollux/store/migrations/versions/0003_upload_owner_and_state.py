"""Uploads record the key that opened them, and outlive their finalize as a record of the file they made.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("uploads", sa.Column("key_id", sa.String))
    op.add_column("uploads", sa.Column("state", sa.String, nullable=False, server_default="active"))
    op.create_index("ix_uploads_key", "uploads", ["key_id"])


def downgrade() -> None:
    op.execute("DELETE FROM uploads WHERE state != 'active'")
    op.drop_index("ix_uploads_key", "uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("state")
        batch.drop_column("key_id")
