"""A real Postgres server for the tests, run from Debian's `postgresql` binaries in a throwaway directory.

`.ci/run` installs the package; a developer without it runs `apt-get install postgresql` (or sets POLLUX_PG_BIN to a
directory holding `initdb` and `pg_ctl`). Postgres refuses to run as root, so as root it runs as the `postgres` user.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path | None:
    if os.environ.get("POLLUX_PG_BIN"):
        return Path(os.environ["POLLUX_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """initdb + pg_ctl start on a free port; `database()` makes a fresh database and returns its URL."""

    def __init__(self, port: int, durable: bool = False) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("Postgres is not installed: apt-get install postgresql (or set POLLUX_PG_BIN)")
        self.bin = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="pollux-pg-", dir="/tmp"))  # reachable by the postgres user
        self._user: dict = {}
        if os.geteuid() == 0:
            self._user = {"user": "postgres", "group": "postgres", "extra_groups": []}
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        options = f"-k {self.root} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if not durable:  # the suite's server is thrown away, and a commit lost in a crash would not matter
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._options = options
        self.resume()
        atexit.register(self.stop)

    def halt(self) -> None:
        """Stop the server at once (as a crash or a network cut would look to its clients); `resume` restarts it."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "start", "-o",
                  self._options)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bin / tool), *args], check=True, capture_output=True, **self._user)

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def database(self, driver: str = "psycopg") -> str:
        name = "pollux_" + secrets.token_hex(6)
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q", "-c",
                  f"CREATE DATABASE {name}")
        return self.url(name, driver)

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
                           capture_output=True, **self._user)
        shutil.rmtree(self.root, ignore_errors=True)
