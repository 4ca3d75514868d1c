"""A real S3 endpoint for tests: moto's server in a subprocess on a free local port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# The server is local: no proxy from the environment.
_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def create_bucket(self, name: str) -> None:
        # moto takes unsigned requests: no credentials needed to set up.
        _open(urllib.request.Request(f"{self.url}/{name}", method="PUT"), timeout=30).close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_s3_server(log_path: Path) -> S3Server:
    """Start moto's S3 server and wait (a bounded while) until it answers."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 60
    while True:
        try:
            _open(server.url, timeout=5).close()
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto did not start:\n{log_path.read_text()}") from None
            time.sleep(0.1)
