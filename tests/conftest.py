"""Tests drive a real `pollux serve` process over HTTP, as a user's program would."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# POLLUX_TEST_DATABASE=postgres runs every server of the suite on a real Postgres (one database per data dir),
# started here from Debian's binaries; otherwise each data dir holds its SQLite file, as by default.
ON_POSTGRES = os.environ.get("POLLUX_TEST_DATABASE", "sqlite") == "postgres"
_postgres = None
_databases: dict[Path, str] = {}


def postgres():
    """The suite's Postgres server, started on first use."""
    global _postgres
    if _postgres is None:
        from postgres import PostgresServer

        _postgres = PostgresServer(free_port())
    return _postgres


def database_url(data_dir: Path) -> str | None:
    """The database a data dir's server uses: None (its SQLite file) unless the suite runs on Postgres."""
    if not ON_POSTGRES:
        return None
    key = data_dir.resolve()
    if key not in _databases:
        _databases[key] = postgres().database()
    return _databases[key]


def pollux_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for a `pollux` command on `data_dir`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    url = database_url(data_dir)
    if url:
        env["POLLUX_DATABASE_URL"] = url
    return {**env, **extra}  # the caller's variables win (a test that sets its own database)


def run_pollux(data_dir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """`pollux ARGS --data-dir DATA_DIR` (on the data dir's database), output captured as text."""
    return subprocess.run([sys.executable, "-m", "pollux.cli", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=pollux_env(data_dir), **kwargs)


@dataclass
class Server:
    """A running `pollux serve` with its data dir, first key and captured output."""

    base_url: str
    api_key: str
    data_dir: Path
    process: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text()

    def logged(self, text: str, count: int = 1) -> bool:
        """Whether the log holds `text` at least `count` times, waiting a bounded while for it (an outcome, not a
        measure of speed)."""
        deadline = time.monotonic() + 30
        while self.log().count(text) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.log().count(text) >= count

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run the `pollux` CLI against this server's data dir."""
        return run_pollux(self.data_dir, *args, check=True)

    def new_key(self, project: str | None = None) -> str:
        args = ["keys", "create"] + (["--project", project] if project else [])
        return self.cli(*args).stdout.strip().splitlines()[-1]

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def sql(server: Server, statement: str, *params: object) -> list[tuple]:
    """Read or change the server's state directly, as another process would (`?` marks the parameters)."""
    return sql_at(database_url(server.data_dir) or f"sqlite:///{server.data_dir / 'pollux.db'}", statement, *params)


def sql_at(url: str, statement: str, *params: object) -> list[tuple]:
    """`sql` on the database at `url`."""
    from sqlalchemy import create_engine

    if not url.startswith("sqlite"):
        statement = statement.replace("?", "%s")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(statement, tuple(params))
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def on_server(server: Server, url: str) -> str:
    """An upload URL made by one server, on another (the capability in it travels, not the host)."""
    return re.sub(r"^http://[^/]+", server.base_url, url)


def eventually(predicate, seconds: float = 30) -> bool:
    """Whether `predicate()` becomes true within a bounded while (an outcome, not a measure of speed)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def refused(server: Server, key: str) -> bool:
    """Whether the server refuses `key` (API_KEY_INVALID), waiting a bounded while: a key revoked by another process
    is refused within the key cache's lifetime (half a second), an outcome and not a measure of speed."""
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(f"{server.base_url}/v1beta/models", headers={"x-goog-api-key": key}, timeout=10)
        if r.status_code == 400 and "API_KEY_INVALID" in r.text:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def stored_time(value) -> datetime:
    """A timestamp column as read back by `sql`: SQLite gives text without a zone, Postgres an aware datetime."""
    value = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def in_store(server: Server, work):
    """Run `await work(store, blobs)` on the server's database and blob store, as another process would."""
    import asyncio

    from pollux.store import Store
    from pollux.store.blobs import open_blobs

    async def run():
        store = await Store.open(database_url(server.data_dir), server.data_dir)
        blobs = open_blobs(str(server.data_dir), server.data_dir)
        try:
            return await work(store, blobs)
        finally:
            await blobs.close()
            await store.close()

    return asyncio.run(run())


def start_server(data_dir: Path, *extra: str, config: str | None = None, env: dict[str, str] | None = None) -> Server:
    """`pollux serve` on `data_dir` with the extra CLI arguments, `config` as its pollux.toml and `env` added to its
    environment when given; a context manager that stops it."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        config_path = data_dir.parent / "pollux.toml"
        config_path.write_text(config)
        extra = ("--config", str(config_path), *extra)
    log_path = data_dir.parent / f"{data_dir.name}-server-{port}.log"
    with open(log_path, "w") as log:  # the server writes to its own copy of the handle
        proc = subprocess.Popen([sys.executable, "-m", "pollux.cli", "serve", "--port", str(port),
                                 "--data-dir", str(data_dir), *extra], stdout=log, stderr=subprocess.STDOUT,
                                env=pollux_env(data_dir, **(env or {})))
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pollux serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"pollux serve did not come up:\n{log_path.read_text()}")
    match = re.search(r"export GEMINI_API_KEY=(\S+)", log_path.read_text())
    key = match.group(1) if match else ""
    return Server(base_url, key, data_dir, proc, log_path, list(extra))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("pollux") / "data") as srv:
        assert srv.api_key.startswith("AIza"), srv.log()
        yield srv


@pytest.fixture
def genai_env(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The two environment variables of the README: the only change a user makes to the docs' examples."""
    for var in ("GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.base_url)
    monkeypatch.setenv("GEMINI_API_KEY", server.api_key)
    return server


@pytest.fixture
def client(genai_env: Server):
    from google import genai
    return genai.Client()


@pytest.fixture
def beta_client(genai_env: Server):
    """A client on /v1beta, the default of SDK 2.x."""
    from google import genai
    from google.genai import types
    return genai.Client(http_options=types.HttpOptions(api_version="v1beta"))
