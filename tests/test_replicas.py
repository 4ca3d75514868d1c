"""Several processes and replicas on one database and one object store: `pollux serve --workers 2` plus a second
server with a data dir of its own (as on another host), sharing the suite's database (SQLite file or Postgres) and a
real S3 endpoint (moto's server). Every protocol must work whichever process serves each request."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import signal
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from conftest import ON_POSTGRES, Server, eventually, on_server, postgres, refused, sql_at, start_server
from google import genai
from google.genai import types
from s3_server import start_s3_server

TIMEOUT = 60
CONFIG = "[limits]\nhousekeeping_seconds = 1\njob_lease_seconds = 2\n"


class Fleet:
    def __init__(self, root: Path) -> None:
        self.s3 = start_s3_server(root / "s3.log")
        self.s3.create_bucket("pollux")
        self.env = {"AWS_ENDPOINT_URL": self.s3.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_REGION": "us-east-1"}
        self.database = postgres().database() if ON_POSTGRES else f"sqlite:///{root / 'shared.db'}"
        self.args = ("--database-url", self.database, "--blob-url", "s3://pollux/fleet")
        self.servers: list[Server] = []
        self._clients: dict[tuple[str, str], genai.Client] = {}
        self.workers = self._start(root / "a", "--workers", "2")  # two processes on one port
        self.replica = self._start(root / "b")                    # another "host": its own data dir
        self.key = self.workers.api_key

    def _start(self, data_dir: Path, *extra: str) -> Server:
        server = start_server(data_dir, *self.args, *extra, config=CONFIG, env=self.env)
        self.servers.append(server)
        return server

    def cli(self, *args: str) -> str:
        import subprocess
        import sys

        result = subprocess.run([sys.executable, "-m", "pollux.cli", *args, *self.args[:2]], capture_output=True,
                                text=True, timeout=60, env={**os.environ, **self.env})
        assert result.returncode == 0, result.stderr
        return result.stdout

    def sql(self, statement: str, *params: object) -> list[tuple]:
        return sql_at(self.database, statement, *params)

    def client(self, server: Server, key: str | None = None) -> genai.Client:
        # Kept: a client the garbage collector takes closes its connections under the request that used it.
        made = self._clients.get((server.base_url, key or self.key))
        if made is None:
            made = genai.Client(api_key=key or self.key, http_options=types.HttpOptions(base_url=server.base_url))
            self._clients[(server.base_url, key or self.key)] = made
        return made

    def s3_keys(self, prefix: str) -> list[str]:
        """The object store's keys under `prefix` (every replica's bytes are there)."""
        r = httpx.get(f"{self.s3.url}/pollux", params={"list-type": "2", "prefix": prefix}, timeout=TIMEOUT)
        return re.findall(r"<Key>([^<]+)</Key>", r.text)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.s3.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        assert fleet.key.startswith("AIza")
        yield fleet
    finally:
        fleet.stop()


def chunk(url: str, data: bytes, offset: int, command: str) -> httpx.Response:
    return httpx.post(url, content=data, timeout=TIMEOUT,
                      headers={"X-Goog-Upload-Offset": str(offset), "X-Goog-Upload-Command": command})


def test_an_upload_whose_chunks_alternate_between_processes(fleet):
    pieces = [os.urandom(6 * 1024 * 1024), b"a small middle piece", os.urandom(3 * 1024 * 1024 + 7)]
    whole = b"".join(pieces)
    r = httpx.post(f"{fleet.workers.base_url}/upload/v1beta/files", timeout=TIMEOUT, json={"file": {}}, headers={
        "x-goog-api-key": fleet.key, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(len(whole)),
        "X-Goog-Upload-Header-Content-Type": "application/octet-stream"})
    assert r.status_code == 400  # an unsupported type is refused at the start
    r = httpx.post(f"{fleet.workers.base_url}/upload/v1beta/files", timeout=TIMEOUT, json={"file": {}}, headers={
        "x-goog-api-key": fleet.key, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(len(whole)), "X-Goog-Upload-Header-Content-Type": "text/plain"})
    url = r.headers["x-goog-upload-url"]
    offset = 0
    for i, piece in enumerate(pieces):
        server = (fleet.replica, fleet.workers)[i % 2]
        last = i == len(pieces) - 1
        r = chunk(on_server(server, url), piece, offset, "upload, finalize" if last else "upload")
        assert r.status_code == 200, r.text
        offset += len(piece)
        assert r.headers["x-goog-upload-size-received"] == str(offset)
    made = r.json()["file"]
    assert made["state"] == "ACTIVE" and made["sizeBytes"] == str(len(whole))
    for server in fleet.servers:  # every process sees the file, with the hash of every byte
        got = fleet.client(server).files.get(name=made["name"])
        assert got.sha256_hash == made["sha256Hash"] and got.size_bytes == len(whole)
    assert made["sha256Hash"] == base64.b64encode(hashlib.sha256(whole).hexdigest().encode()).decode()
    # A model reads it on whichever process serves the request (here the replica that did not assemble it).
    counted = fleet.client(fleet.replica).models.count_tokens(
        model="gemini-2.5-flash", contents=[types.Part.from_uri(file_uri=made["uri"], mime_type="text/plain"), "?"])
    assert counted.total_tokens > len(whole) // 8


def test_two_chunks_racing_at_one_offset_count_once(fleet):
    r = httpx.post(f"{fleet.workers.base_url}/upload/v1beta/files", timeout=TIMEOUT, json={"file": {}}, headers={
        "x-goog-api-key": fleet.key, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Type": "text/plain"})
    url = r.headers["x-goog-upload-url"]
    results: list[httpx.Response] = []
    start = threading.Barrier(2)

    def send(server: Server, data: bytes) -> None:
        start.wait()
        results.append(chunk(on_server(server, url), data, 0, "upload"))

    threads = [threading.Thread(target=send, args=(s, d)) for s, d in
               ((fleet.workers, b"first writer " * 1000), (fleet.replica, b"second writer " * 1000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if r.status_code == 200]
    assert len(won) == 1 and all(r.status_code == 400 for r in results if r not in won), [r.text for r in results]
    size = int(won[0].headers["x-goog-upload-size-received"])
    done = chunk(on_server(fleet.replica, url), b"", size, "finalize")
    assert done.status_code == 200 and done.json()["file"]["sizeBytes"] == str(size)  # the winner's bytes only


def test_a_key_revoked_anywhere_is_refused_everywhere(fleet):
    out = fleet.cli("keys", "create", "--name", "short-lived")
    key = out.strip().splitlines()[-1]
    key_id = re.search(r"Created key (\S+)", out).group(1)
    for server in fleet.servers:
        assert fleet.client(server, key).models.get(model="gemini-2.5-flash").name
    fleet.cli("keys", "revoke", key_id)
    for server in fleet.servers:
        assert refused(server, key)


def test_a_signature_made_by_one_replica_is_accepted_by_another(fleet):
    question = types.Content(role="user", parts=[types.Part(text="Plan a trip")])
    answer = fleet.client(fleet.workers).models.generate_content(model="gemini-3-pro-preview", contents=[question])
    content = answer.candidates[0].content
    assert content.parts[-1].thought_signature
    follow_up = fleet.client(fleet.replica).models.generate_content(
        model="gemini-3-pro-preview", contents=[question, content, types.Content(role="user", parts=[
            types.Part(text="And then?")])])
    assert follow_up.text
    tampered = content.model_copy(deep=True)
    tampered.parts[-1].thought_signature = b"\x01" + bytes(40)
    with pytest.raises(genai.errors.ClientError) as err:  # a signature no replica made is refused by all
        fleet.client(fleet.replica).models.generate_content(model="gemini-3-pro-preview", contents=[
            question, tampered, types.Content(role="user", parts=[types.Part(text="And then?")])])
    assert err.value.code == 400


def _expired_counts(server: Server) -> int:
    return sum(int(n) for n in re.findall(r"expired: (\d+) files", server.log()))


def test_each_expired_file_is_deleted_once_across_the_fleet(fleet):
    before = sum(_expired_counts(s) for s in fleet.servers)
    names = []
    for i in range(6):
        server = fleet.servers[i % 2]
        uploaded = fleet.client(server).files.upload(file=io.BytesIO(f"file {i}".encode()),
                                                     config=types.UploadFileConfig(mime_type="text/plain"))
        names.append(uploaded.name.removeprefix("files/"))
    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    marks = ", ".join("?" for _ in names)
    fleet.sql(f"UPDATE files SET expire_time = ? WHERE id IN ({marks})", past, *names)
    # Gone at once for every reader; deleted (rows and bytes) by whichever process holds the housekeeping job.
    for server in fleet.servers:
        with pytest.raises(genai.errors.ClientError):
            fleet.client(server).files.get(name=f"files/{names[0]}")
    assert eventually(lambda: fleet.sql(f"SELECT count(*) FROM files WHERE id IN ({marks})", *names) == [(0,)])
    assert eventually(lambda: sum(_expired_counts(s) for s in fleet.servers) - before >= len(names))
    assert sum(_expired_counts(s) for s in fleet.servers) - before == len(names)  # each once, none twice


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_job_held_by_a_killed_worker_is_finished_by_another(fleet):
    """The housekeeping job, caught mid-run: the object store is frozen (SIGSTOP) so the process that claims the job
    hangs in it, holding the lease with its heartbeats. That process is SIGKILLed and the store thawed: once the
    lease runs out (2 s here) another process claims the job and finishes it, deleting the expired file the killed
    one never got to."""
    uploaded = fleet.client(fleet.workers).files.upload(file=io.BytesIO(b"expires while the store is frozen"),
                                                        config=types.UploadFileConfig(mime_type="text/plain"))
    file_id = uploaded.name.removeprefix("files/")
    job = "recurring:housekeeping"
    processes = {fleet.replica.process.pid: fleet.replica, **{pid: fleet.workers for pid in
                                                               _children(fleet.workers.process.pid)}}
    os.kill(fleet.s3.process.pid, signal.SIGSTOP)
    try:
        past = (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        fleet.sql("UPDATE files SET expire_time = ? WHERE id = ?", past, file_id)
        # The next run deletes the row, then waits on the frozen store for the bytes: it holds the job.
        assert eventually(lambda: fleet.sql("SELECT count(*) FROM files WHERE id = ?", file_id) == [(0,)])
        holder = lambda: fleet.sql("SELECT lease_owner, attempts FROM jobs WHERE id = ?", job)[0]  # noqa: E731
        assert eventually(lambda: holder()[0] is not None)
        owner, attempts = holder()
        victim = int(owner.split(":")[1])
        assert victim in processes, (owner, processes)
        os.kill(victim, signal.SIGKILL)
    finally:
        os.kill(fleet.s3.process.pid, signal.SIGCONT)
    # Another process takes the job over when the lease runs out, and runs it to the end.
    assert eventually(lambda: holder()[0] != owner and holder()[1] > attempts)
    assert eventually(lambda: not fleet.s3_keys(f"fleet/files/{uploaded.name.split('/')[-1]}"))
    if processes[victim] is fleet.workers:  # uvicorn's supervisor replaces a killed worker; the port keeps serving
        assert eventually(lambda: len(_children(fleet.workers.process.pid)) >= 2)
    assert fleet.client(fleet.workers).models.get(model="gemini-2.5-flash").name
