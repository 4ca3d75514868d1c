"""Durable state: SQLite through SQLAlchemy 2, schema managed by Alembic migrations."""

from .db import Store

__all__ = ["Store"]
