"""The context caches' repository (`store/caches.py`) on the suite's database (SQLite, or Postgres in the Postgres
pass): which caches are still live, asked about many at once (each process does so for the prefixes it keeps)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import ON_POSTGRES, postgres

from pollux.store import Store
from pollux.store.db import utcnow


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(postgres().database() if ON_POSTGRES else None, tmp_path)
    yield store
    await store.close()


def row(project_id: str, cache_id: str, expires_in: float) -> dict:
    now = utcnow()
    return {"project_id": project_id, "id": cache_id, "model": "gemini-2.5-flash", "display_name": "",
            "token_count": 2000, "token_details": {"TEXT": 2000}, "size_bytes": 10, "files": {},
            "create_time": now, "update_time": now, "expire_time": now + timedelta(seconds=expires_in)}


async def test_live_answers_for_thousands_of_caches_at_once(store):
    """More caches than SQLite takes terms in one condition (a thousand): all are answered, live ones only, and a cache
    is known by its project and id together."""
    project = await store.projects.create("p-caches", "caches")
    other = await store.projects.create("p-other", "other")
    await store.caches.create(row(project.id, "alive", 3600), 10, 10**9)
    await store.caches.create(row(project.id, "expired", -1), 10, 10**9)
    await store.caches.create(row(other.id, "theirs", 3600), 10, 10**9)
    asked = [(project.id, f"missing-{i}") for i in range(2500)]
    asked += [(project.id, "alive"), (project.id, "expired"), (project.id, "theirs"), (other.id, "theirs")]
    assert await store.caches.live(asked) == {(project.id, "alive"), (other.id, "theirs")}
    assert await store.caches.live([]) == set()
