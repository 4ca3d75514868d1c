"""State for several processes: upload pieces, leased jobs, shared secrets, one open upload per file name.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_pieces",
        sa.Column("upload_id", sa.String, sa.ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("start", sa.BigInteger, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("blob", sa.String, nullable=False),
    )
    # An upload in progress kept its bytes in one part file: that file becomes its first piece.
    op.execute("INSERT INTO upload_pieces (upload_id, start, size, blob) SELECT id, 0, committed, "
               "'uploads/' || id || '.part' FROM uploads WHERE state = 'active' AND committed > 0")
    op.create_index("ux_uploads_open_file", "uploads", ["project_id", "file_id"], unique=True,
                    sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"))
    op.create_table(
        "jobs",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("project_id", sa.String),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.String),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_jobs_due", "jobs", ["state", "run_at"])
    # Files left PROCESSING by a crash were processed again at the next start; now a job does it, once.
    payload = ("json_build_object('project_id', project_id, 'file_id', id)" if op.get_bind().dialect.name ==
               "postgresql" else "json_object('project_id', project_id, 'file_id', id)")
    op.execute("INSERT INTO jobs (id, kind, project_id, payload, state, run_at, attempts, created_at, updated_at) "
               f"SELECT 'recover-' || project_id || '-' || id, 'process-file', project_id, {payload}, 'queued', "
               "update_time, 0, update_time, update_time FROM files WHERE state = 'PROCESSING'")
    op.create_table(
        "secrets",
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("secrets")
    op.drop_index("ix_jobs_due", "jobs")
    op.drop_table("jobs")
    op.drop_index("ux_uploads_open_file", "uploads")
    op.drop_table("upload_pieces")
