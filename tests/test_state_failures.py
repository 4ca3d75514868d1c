"""When the shared state fails: a database or object store that cannot be reached answers 503 UNAVAILABLE with
RetryInfo (never a 500, never a lost acknowledged byte) and recovers when it comes back; a database migrated by a
newer Pollux is refused at start with a clear message."""

from __future__ import annotations

import io

import httpx
import pytest
from conftest import ON_POSTGRES, eventually, free_port, run_pollux, sql, start_server
from google import genai
from google.genai import errors, types
from s3_server import start_s3_server

TIMEOUT = 60


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["status"] == "UNAVAILABLE" and error["code"] == 503, error
    assert any(d["@type"].endswith("google.rpc.RetryInfo") for d in error.get("details", [])), error


def test_a_database_migrated_by_a_newer_pollux_is_refused(tmp_path):
    data = tmp_path / "data"
    with start_server(data) as srv:
        sql(srv, "UPDATE alembic_version SET version_num = '9999'")
    for command in (["keys", "list"], ["serve", "--port", "0"]):
        result = run_pollux(data, *command, timeout=60)
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "migration 9999, newer than this Pollux knows" in result.stderr, result.stderr


def test_an_unreachable_object_store_is_a_503_and_loses_nothing(tmp_path):
    s3 = start_s3_server(tmp_path / "s3.log")
    try:
        s3.create_bucket("pollux")
        env = {"AWS_ENDPOINT_URL": s3.url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_REGION": "us-east-1"}
        with start_server(tmp_path / "data", "--blob-url", "s3://pollux/p", env=env) as srv:
            client = genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.base_url))
            kept = client.files.upload(file=io.BytesIO(b"stored before the outage"),
                                       config=types.UploadFileConfig(mime_type="text/plain"))
            s3.stop()
            r = httpx.post(f"{srv.base_url}/upload/v1beta/files?uploadType=media", content=b"during the outage",
                           headers={"x-goog-api-key": srv.api_key, "Content-Type": "text/plain"}, timeout=TIMEOUT)
            assert_unavailable(r)
            assert client.files.get(name=kept.name).state == types.FileState.ACTIVE  # the database still answers
    finally:
        s3.stop()


@pytest.mark.skipif(not ON_POSTGRES, reason="needs a database server to stop: runs in .ci/run's Postgres pass")
def test_an_unreachable_database_is_a_503_until_it_returns(tmp_path):
    from postgres import PostgresServer

    pg = PostgresServer(free_port(), durable=True)  # what it acknowledged survives its crash
    try:
        url = pg.database()
        with start_server(tmp_path / "data", "--database-url", url) as srv:
            client = genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(base_url=srv.base_url))
            kept = client.files.upload(file=io.BytesIO(b"acknowledged"),
                                       config=types.UploadFileConfig(mime_type="text/plain"))
            pg.halt()
            r = httpx.get(f"{srv.base_url}/v1beta/files", headers={"x-goog-api-key": srv.api_key}, timeout=TIMEOUT)
            assert_unavailable(r)
            r = httpx.post(f"{srv.base_url}/upload/v1beta/files?uploadType=media", content=b"refused, not lost",
                           headers={"x-goog-api-key": srv.api_key, "Content-Type": "text/plain"}, timeout=TIMEOUT)
            assert_unavailable(r)
            pg.resume()
            assert eventually(lambda: httpx.get(f"{srv.base_url}/v1beta/files", timeout=TIMEOUT, headers={
                "x-goog-api-key": srv.api_key}).status_code == 200)
            assert client.files.get(name=kept.name).size_bytes == len(b"acknowledged")
            with pytest.raises(errors.ClientError):
                client.files.get(name="files/never-made")
    finally:
        pg.stop()
