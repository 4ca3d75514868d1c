"""The resumable upload protocol's edges, over raw HTTP: `query` after finalize, uploads closed by revoking their key
or deleting their project (`pollux projects delete`), and requested file ids matched whole.

Reference: wire-protocol.md §8.1 (the upload protocol), semantics.md (files).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from conftest import Server, in_store, refused, run_pollux, sql, start_server, stored_time
from google import genai
from google.genai import errors, types

TIMEOUT = 60
GONE = "The upload was not found"


# Helpers --------------------------------------------------------------------------------------------------------------
def start(server: Server, size: int | None = 10, key: str | None = None, name: str | None = None) -> httpx.Response:
    headers = {"x-goog-api-key": key or server.api_key, "X-Goog-Upload-Protocol": "resumable",
               "X-Goog-Upload-Command": "start", "X-Goog-Upload-Header-Content-Type": "text/plain"}
    if size is not None:
        headers["X-Goog-Upload-Header-Content-Length"] = str(size)
    meta = {"displayName": "proto", **({"name": name} if name is not None else {})}
    return httpx.post(f"{server.base_url}/upload/v1beta/files", headers=headers, json={"file": meta}, timeout=TIMEOUT)


def open_upload(server: Server, size: int | None = 10, key: str | None = None) -> str:
    r = start(server, size, key)
    assert r.status_code == 200 and r.headers["x-goog-upload-status"] == "active", r.text
    return r.headers["x-goog-upload-url"]


def send(url: str, data: bytes, offset: int, command: str, key: str | None = None) -> httpx.Response:
    headers = {"X-Goog-Upload-Offset": str(offset), "X-Goog-Upload-Command": command}
    if key:
        headers["x-goog-api-key"] = key  # as the JS SDK does; the Python SDK sends no key with chunks
    return httpx.post(url, content=data, headers=headers, timeout=TIMEOUT)


def query(url: str, key: str | None = None) -> httpx.Response:
    headers = {"X-Goog-Upload-Command": "query", **({"x-goog-api-key": key} if key else {})}
    return httpx.post(url, headers=headers, timeout=TIMEOUT)


def stored_pieces(server: Server, url: str) -> list[Path]:
    """The stored pieces of an open upload's bytes (in the data dir's blob store), under the SHA-256 of the
    capability in its URL."""
    token = httpx.URL(url).params["upload_id"]
    return [p for p in (server.data_dir / "uploads" / hashlib.sha256(token.encode()).hexdigest()).glob("*")
            if p.is_file()]


def assert_error(r: httpx.Response, code: int, status: str, upload_status: str, message: str = "") -> None:
    where = f"{r.request.method} {r.request.url} -> {r.status_code} {dict(r.headers)}: {r.text[:500]}"
    assert r.status_code == code, where
    error = r.json()["error"]
    assert (error["code"], error["status"]) == (code, status) and message in error["message"], where
    assert r.headers.get("x-goog-upload-status") == upload_status, where


def upload_row(server: Server, url: str, columns: str = "state") -> tuple | None:
    token = httpx.URL(url).params["upload_id"]
    rows = sql(server, f"SELECT {columns} FROM uploads WHERE id = ?", hashlib.sha256(token.encode()).hexdigest())
    return rows[0] if rows else None


def sweep(server: Server) -> int:
    """One pass of the server's sweeper, run here on the server's data dir (it runs every minute there)."""
    from pollux.config import Limits
    from pollux.files.service import FileService
    from pollux.files.uploads import UploadService

    async def run(store, blobs):
        return await UploadService(FileService(store, blobs, Limits()), 3600).sweep()

    return in_store(server, run)


def run_cli(server: Server, *args: str) -> subprocess.CompletedProcess:
    return run_pollux(server.data_dir, *args, timeout=60)


def key_id(server: Server, key: str) -> str:
    """The id `keys list` shows for a key (found here by its hash, which is all the database holds)."""
    rows = sql(server, "SELECT id FROM api_keys WHERE key_hash = ?", hashlib.sha256(key.encode()).hexdigest())
    assert len(rows) == 1, rows
    return rows[0][0]


def new_project(server: Server, tag: str) -> tuple[str, str, str]:
    """A fresh project: (name, id, key)."""
    name = f"{tag} {secrets.token_hex(3)}"
    out = server.cli("projects", "create", name).stdout
    project_id = re.search(r"\((gen-lang-client-\d+)\)", out).group(1)
    return name, project_id, server.new_key(project=name)


# query after finalize ---------------------------------------------------------------------------------------------
def test_query_after_finalize_answers_with_the_file(server):
    url = open_upload(server)
    done = send(url, b"0123456789", 0, "upload, finalize")
    assert done.status_code == 200 and done.headers["x-goog-upload-status"] == "final", done.text
    q = query(url)
    assert q.status_code == 200 and q.headers["x-goog-upload-status"] == "final", q.text
    assert q.headers["x-goog-upload-size-received"] == "10"
    assert q.json() == done.json()  # the finalize response, for a client that lost it
    assert query(url, key=server.api_key).json() == done.json()  # the JS SDK sends its key: the same project's
    # A finalized upload takes no more bytes, and stays final.
    again = send(url, b"", 10, "upload, finalize")
    assert_error(again, 404, "NOT_FOUND", "final", "already finalized")
    assert query(url).json() == done.json()


def test_a_finalized_upload_is_only_its_capability_holders(server):
    url = open_upload(server)
    assert send(url, b"0123456789", 0, "upload, finalize").status_code == 200
    _, _, stranger = new_project(server, "query-stranger")
    assert_error(query(url, key=stranger), 404, "NOT_FOUND", "final", GONE)  # as if there were no upload
    token = httpx.URL(url).params["upload_id"]
    forged = url.replace(token, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    assert_error(query(forged), 404, "NOT_FOUND", "final", GONE)
    assert query(url).status_code == 200  # neither attempt closed it


def test_query_after_the_file_was_deleted_answers_as_a_missing_file(server):
    client = genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.base_url))
    name = "files/requery" + hashlib.sha256(server.base_url.encode()).hexdigest()[:6]
    url = start(server, name=name).headers["x-goog-upload-url"]
    assert send(url, b"0123456789", 0, "upload, finalize").status_code == 200
    client.files.delete(name=name)
    with pytest.raises(errors.ClientError) as err:
        client.files.get(name=name)
    missing = query(url)
    assert_error(missing, 403, "PERMISSION_DENIED", "final", err.value.message)
    # The name is free again, and the old upload does not answer with the new file of that name.
    reused = client.files.upload(file=io.BytesIO(b"new"), config=types.UploadFileConfig(mime_type="text/plain",
                                                                                        name=name))
    assert reused.size_bytes == 3
    assert_error(query(url), 403, "PERMISSION_DENIED", "final", err.value.message)


def test_a_finalized_upload_holds_no_quota(tmp_path):
    """The record of a finalized upload is not an upload in progress: its bytes count once, as its file."""
    with start_server(tmp_path / "data", config="[limits]\nmax_project_bytes = 100\n") as srv:
        first = open_upload(srv, 60)
        assert send(first, b"x" * 60, 0, "upload, finalize").status_code == 200
        second = start(srv, 40)
        assert second.status_code == 200, second.text  # 60 + 40 fits in 100; 60 twice + 40 would not
        assert start(srv, 1).status_code == 429


def test_the_finalized_record_expires_with_the_upload_ttl_or_the_file(tmp_path):
    config = "[limits]\nfile_ttl_seconds = 600\nupload_ttl_seconds = 3600\n"
    with start_server(tmp_path / "data", config=config) as srv:
        url = open_upload(srv)
        file = send(url, b"0123456789", 0, "upload, finalize").json()["file"]
        # Kept no longer than the file it names (here the file's 10 minutes, not the upload TTL's hour).
        (expires,) = upload_row(srv, url, "expire_time")
        kept = stored_time(expires)
        assert kept == datetime.fromisoformat(file["expirationTime"].replace("Z", "+00:00"))
        # Once expired it answers as a missing upload, and the sweep deletes it.
        past = (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        sql(srv, "UPDATE uploads SET expire_time = ? WHERE state = 'final'", past)
        assert_error(query(url), 404, "NOT_FOUND", "final", GONE)
        assert upload_row(srv, url) is not None
        assert sweep(srv) == 1 and upload_row(srv, url) is None
    with start_server(tmp_path / "data2", config="[limits]\nfile_ttl_seconds = 3600\nupload_ttl_seconds = 600\n") \
            as srv:
        url = open_upload(srv)
        before = datetime.now(timezone.utc)
        assert send(url, b"0123456789", 0, "upload, finalize").status_code == 200
        after = datetime.now(timezone.utc)
        (expires,) = upload_row(srv, url, "expire_time")
        kept = stored_time(expires)
        # The upload TTL (shorter than the file's), counted from the finalize, however long that took.
        assert before + timedelta(seconds=600) <= kept <= after + timedelta(seconds=600)


def test_one_shot_uploads_leave_no_upload_record(server):
    r = httpx.post(f"{server.base_url}/upload/v1beta/files?uploadType=media", content=b"hello",
                   headers={"x-goog-api-key": server.api_key, "Content-Type": "text/plain"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    name = r.json()["file"]["name"].removeprefix("files/")
    assert sql(server, "SELECT count(*) FROM uploads WHERE file_id = ?", name) == [(0,)]


# Revoked keys and deleted projects close their uploads --------------------------------------------------------------
def test_revoking_a_key_closes_its_uploads(server):
    project, _, key = new_project(server, "revoke-uploads")
    other_key = server.new_key(project=project)
    closing = open_upload(server, 10, key=key)
    assert send(closing, b"01234", 0, "upload").headers["x-goog-upload-status"] == "active"
    finished = open_upload(server, 10, key=key)
    made_name = send(finished, b"0123456789", 0, "upload, finalize").json()["file"]["name"]
    kept = open_upload(server, 10, key=other_key)  # the same project, another key
    assert send(kept, b"01234", 0, "upload").status_code == 200
    assert stored_pieces(server, closing)

    revoked = run_cli(server, "keys", "revoke", key_id(server, key))
    assert revoked.returncode == 0 and "closed the 1 upload" in revoked.stdout, (revoked.stdout, revoked.stderr)
    assert not stored_pieces(server, closing)  # the partial bytes go at once
    for r in (send(closing, b"56789", 5, "upload"), send(closing, b"56789", 5, "upload, finalize"), query(closing),
              query(finished)):  # a finalized upload's URL was the key's to give too
        assert_error(r, 404, "NOT_FOUND", "final", GONE)
    # The JS SDK sends the (revoked) key with every chunk: the key's own error, still with an upload status.
    assert refused(server, key)
    r = send(closing, b"56789", 5, "upload, finalize", key=key)
    assert r.status_code == 400 and r.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID", r.text
    assert "x-goog-upload-status" in r.headers
    # The project's other uploads go on; a file made before the revocation stays the project's.
    assert send(kept, b"56789", 5, "upload, finalize").headers["x-goog-upload-status"] == "final"
    made = httpx.get(f"{server.base_url}/v1beta/{made_name}", headers={"x-goog-api-key": other_key}, timeout=TIMEOUT)
    assert made.status_code == 200, made.text


def test_each_chunk_checks_the_key_that_opened_the_upload(server):
    """The server checks at every step, whatever the CLI did: a revocation that left the upload's row behind (as one
    racing a chunk can) closes it too, and its bytes go at the next request or the next sweep."""
    _, _, key = new_project(server, "revoke-check")
    by_request, by_sweep = open_upload(server, 10, key=key), open_upload(server, 10, key=key)
    for url in (by_request, by_sweep):
        assert send(url, b"01234", 0, "upload").status_code == 200
    sql(server, "UPDATE api_keys SET revoked_at = ? WHERE id = ?", datetime.now(timezone.utc).isoformat(),
        key_id(server, key))
    assert upload_row(server, by_request) is not None
    assert_error(send(by_request, b"56789", 5, "upload, finalize"), 404, "NOT_FOUND", "final", GONE)
    assert upload_row(server, by_request) is None and not stored_pieces(server, by_request)
    # The server's own sweeper may get there first (it runs every minute): what counts is that one has run.
    sweep(server)
    assert upload_row(server, by_sweep) is None and not stored_pieces(server, by_sweep)


def test_projects_delete_removes_keys_files_and_uploads(server):
    name, project_id, key = new_project(server, "doomed")
    client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=server.base_url))
    stored = client.files.upload(file=io.BytesIO(b"kept until the project goes"),
                                 config=types.UploadFileConfig(mime_type="text/plain"))
    finished = open_upload(server, 10, key=key)
    assert send(finished, b"0123456789", 0, "upload, finalize").status_code == 200
    pending = open_upload(server, 10, key=key)
    assert send(pending, b"01234", 0, "upload").status_code == 200
    assert (server.data_dir / "files" / project_id / stored.name.removeprefix("files/")).exists()
    assert stored_pieces(server, pending)

    deleted = run_cli(server, "projects", "delete", name)
    assert deleted.returncode == 0, deleted.stderr
    assert "1 key(s), 2 file(s), 0 context cache(s) and 1 open upload(s)" in deleted.stdout, deleted.stdout
    assert not (server.data_dir / "files" / project_id).exists() and not stored_pieces(server, pending)
    assert name not in server.cli("projects", "list").stdout and project_id not in server.cli("keys", "list").stdout
    assert refused(server, key)
    r = httpx.get(f"{server.base_url}/v1beta/files", headers={"x-goog-api-key": key}, timeout=TIMEOUT)
    assert r.status_code == 400 and r.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID", r.text
    assert_error(send(pending, b"56789", 5, "upload, finalize"), 404, "NOT_FOUND", "final", GONE)
    assert_error(query(finished), 404, "NOT_FOUND", "final", GONE)
    # By id too; and a project that does not exist is an error that says so.
    _, other_id, _ = new_project(server, "doomed-by-id")
    assert run_cli(server, "projects", "delete", other_id).returncode == 0
    missing = run_cli(server, "projects", "delete", other_id)
    assert missing.returncode != 0 and other_id in missing.stderr, (missing.stdout, missing.stderr)
    assert server.process.poll() is None and server.cli("keys", "list").returncode == 0


# Requested ids are matched whole --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["files/abc\n", "abc\n", "files/abc-"])
def test_a_requested_file_id_must_be_valid_whole(server, name):
    r = start(server, name=name)
    assert r.status_code == 400 and "Invalid file name" in r.json()["error"]["message"], r.text
    meta = json.dumps({"file": {"name": name}}).encode()
    body = (b"--B\r\nContent-Type: application/json\r\n\r\n" + meta + b"\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            b"hi\r\n--B--\r\n")
    r = httpx.post(f"{server.base_url}/upload/v1beta/files?uploadType=multipart", content=body, timeout=TIMEOUT,
                   headers={"x-goog-api-key": server.api_key, "Content-Type": "multipart/related; boundary=B"})
    assert r.status_code == 400 and "Invalid file name" in r.json()["error"]["message"], r.text
    client = genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.base_url))
    with pytest.raises(errors.ClientError) as err:
        client.files.upload(file=io.BytesIO(b"hi"), config=types.UploadFileConfig(mime_type="text/plain", name=name))
    assert err.value.code == 400 and "Invalid file name" in err.value.message


def test_a_file_uri_is_matched_whole(server):
    client = genai.Client(api_key=server.api_key, http_options=types.HttpOptions(base_url=server.base_url))
    uploaded = client.files.upload(file=io.BytesIO(b"whole"), config=types.UploadFileConfig(mime_type="text/plain"))

    def count(uri: str) -> httpx.Response:
        return httpx.post(f"{server.base_url}/v1beta/models/gemini-2.5-flash:countTokens", timeout=TIMEOUT,
                          headers={"x-goog-api-key": server.api_key},
                          json={"contents": [{"parts": [{"fileData": {"fileUri": uri, "mimeType": "text/plain"}}]}]})

    assert count(uploaded.uri).status_code == 200
    r = count(uploaded.uri + "\n/")
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED", r.text
