"""API keys and projects: issuing keys (stored only as hashes) and resolving a request's key to its project."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from .errors import api_key_invalid, api_key_missing
from .store import Store
from .store.records import Project

DEFAULT_PROJECT = "Default Gemini Project"


def new_key() -> str:
    """`AIza` + 35 URL-safe characters: Gemini's shape, so that secret scanners flag a committed Pollux key."""
    return "AIza" + secrets.token_urlsafe(27)[:35]


def hash_key(key: str) -> str:
    # Keys carry ~208 random bits, so a fast hash is enough; a slow KDF would only cost every request.
    return hashlib.sha256(key.encode()).hexdigest()


def new_project_id() -> str:
    return "gen-lang-client-" + "".join(secrets.choice("0123456789") for _ in range(10))


@dataclass(frozen=True)
class IssuedKey:
    id: str
    key: str
    project_id: str
    name: str


async def issue_key(store: Store, project_id: str, name: str) -> IssuedKey:
    key = new_key()
    key_id = secrets.token_hex(4)
    await store.keys.create(key_id, project_id, name, hash_key(key), key[-4:])
    return IssuedKey(key_id, key, project_id, name)


async def create_project(store: Store, name: str) -> Project:
    if await store.projects.find(name):
        raise ValueError(f"a project named {name!r} already exists")
    return await store.projects.create(new_project_id(), name)


async def bootstrap(store: Store) -> IssuedKey | None:
    """On an empty database: the default project and its first key (returned once, for printing). Of several
    processes or replicas starting at once on one database, one creates them (the project's unique name decides)."""
    if await store.projects.count():
        return None
    try:
        project = await create_project(store, DEFAULT_PROJECT)
    except (ValueError, IntegrityError):
        return None
    return await issue_key(store, project.id, "Default key")


def request_key(request: Request) -> str | None:
    """The key from `x-goog-api-key`, `?key=` or `Authorization: Bearer`, as the SDKs, curl and openai send it."""
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if not key:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:]
    return key.strip() if key else None


async def authenticate(store: Store, request: Request) -> str:
    """The project id the request acts for, or the real API's error for a missing or bad key. The key's id is noted
    in `request.state.key_id`: an upload records which key opened it, and closes when that key is revoked."""
    key = request_key(request)
    if not key:
        raise api_key_missing()
    live = await store.keys.live(hash_key(key))
    if live is None:
        raise api_key_invalid()
    request.state.key_id = live.id
    return live.project_id

