"""`database_url`: what a configured database URL becomes (the async driver SQLAlchemy uses), and what is refused."""

from pathlib import Path

import pytest

from pollux.store.db import StoreError, database_url


@pytest.mark.parametrize("given, used", [
    (None, "sqlite+aiosqlite:///data/pollux.db"),
    ("sqlite:////var/lib/pollux/state.db", "sqlite+aiosqlite:////var/lib/pollux/state.db"),
    ("postgresql://pollux:secret@db/pollux", "postgresql+psycopg://pollux:secret@db/pollux"),
    ("postgres://pollux@db/pollux", "postgresql+psycopg://pollux@db/pollux"),
    ("postgresql+asyncpg://pollux@db:6432/pollux", "postgresql+asyncpg://pollux@db:6432/pollux"),
])
def test_urls_pollux_takes(given, used):
    assert database_url(given, Path("data")) == used


@pytest.mark.parametrize("given", ["mysql://db/pollux", "postgresql+pg8000://db/pollux", "oracle://x"])
def test_urls_pollux_refuses_without_showing_the_password(given):
    with pytest.raises(StoreError) as err:
        database_url(given.replace("://", "://user:hunter2@"), Path("data"))
    assert "hunter2" not in str(err.value) and "postgresql+psycopg://" in str(err.value)
